"""Reads a Vocab, once, from whatever the user has: a vocab.txt, a
tokenizer.json, a tokenizer folder, a hub id, a ``{token: id}`` mapping, a
``tokenizers.Tokenizer`` or a transformers tokenizer.

A ``tokenizers.Tokenizer`` and a tokenizer.json are read by one parser: the
Tokenizer's own JSON form (``to_str()``) is the file's content.
"""

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from vocabxfer.vocabularies import families
from vocabxfer.errors import VocabError
from vocabxfer.checkpoints.untrusted import (MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_VOCAB_FILE_BYTES,
                        check_regular_file, check_tokenizer_folder, json_depth, read_json)
from vocabxfer.vocabularies.tokenizer_settings import read_folder_settings, settings_of
from vocabxfer.vocabularies.vocab import Vocab, indexed, roles_from_strings, tokens_by_id

VocabSource = Union[Vocab, str, os.PathLike, Mapping[str, int], Any]

COMPONENTS = ("normalizer", "pre_tokenizer", "decoder", "post_processor")


# ---- the WordPiece pipeline of a bare vocabulary ----------------------------------

def wordpiece_tokenizer(vocab: Vocab) -> Any:
    """BERT's tokenization over a bare WordPiece vocabulary (a vocab.txt, a
    mapping): normaliser, pre-tokenizer, greedy WordPiece, [CLS]/[SEP]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    unk = vocab.special_tokens_map.get("unk", "[UNK]")
    tokenizer = Tokenizer(models.WordPiece(vocab=dict(vocab.ids), unk_token=unk,
                                           continuing_subword_prefix=vocab.continuation_prefix))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=vocab.lowercase,
                                                      strip_accents=vocab.strip_accents)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix=vocab.continuation_prefix)
    tokenizer.add_special_tokens(sorted(vocab.all_special_tokens, key=vocab.ids.__getitem__))
    cls, sep = vocab.id_of_role("cls"), vocab.id_of_role("sep")
    if cls is not None and sep is not None:
        tokenizer.post_processor = processors.BertProcessing(
            (vocab.tokens[sep], sep), (vocab.tokens[cls], cls))
    return tokenizer


def with_wordpiece_loader(vocab: Vocab) -> Vocab:
    """A WordPiece vocabulary always carries a tokenizer: its own, or BERT's
    pipeline over it (built from this same data, the loader aside)."""
    if vocab.loader is not None or vocab.family != families.WORDPIECE:
        return vocab
    return replace(vocab, loader=lambda: wordpiece_tokenizer(vocab))


# ---- vocab.txt ------------------------------------------------------------------

def read_vocab_txt(path: Path, lowercase: Optional[bool] = None) -> Vocab:
    """A WordPiece vocab.txt: one token per line, the line number is the id.
    Line ends may be \\n, \\r\\n or \\r; a UTF-8 byte-order mark is not part of
    the first token."""
    name = str(path)
    check_regular_file(path, MAX_VOCAB_FILE_BYTES, VocabError, "a vocab.txt or tokenizer.json")
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise VocabError(f"{name}: holds NUL bytes, so it is not a vocabulary file "
                         "(expected one token per line, UTF-8)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise VocabError(f"{name}: line {line} is not valid UTF-8 (byte 0x{raw[error.start]:02x} "
                         f"at offset {error.start}); expected a UTF-8 text file") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise VocabError(f"{name}: the vocabulary is empty (expected one token per line)")
    ids = dict(zip(lines, range(len(lines))))
    if len(ids) != len(lines) or "" in ids:
        explain_bad_lines(lines, name)
    roles = roles_from_strings(ids)
    # Casing, unless the caller knows it, is read off the tokens when needed.
    return Vocab(tokens=tuple(lines), ids=ids, name=name, family=families.WORDPIECE,
                 special_tokens_map=roles, all_special_tokens=frozenset(roles.values()),
                 declared_lowercase=lowercase, declared_strip_accents=lowercase)


def explain_bad_lines(lines: List[str], name: str) -> None:
    """Raise the error that names the empty or repeated line of a vocab.txt."""
    first_line: Dict[str, int] = {}
    for index, token in enumerate(lines):
        if token == "":
            raise VocabError(f"{name}: line {index + 1} is empty; every line must hold a token")
        if token in first_line:
            raise VocabError(f"{name}: token {token!r} appears twice, on lines "
                             f"{first_line[token] + 1} and {index + 1}; each token must "
                             "appear once")
        first_line[token] = index


# ---- tokenizer.json and tokenizers.Tokenizer: one parser ---------------------------

def walk_states(state: Any):
    """Every component in a (possibly nested) Sequence state."""
    if isinstance(state, dict):
        yield state
        for key in ("normalizers", "pretokenizers", "pre_tokenizers", "decoders",
                    "processors"):
            for child in state.get(key) or []:
                yield from walk_states(child)


def family_of(model_type: str, prefix: str, states: Dict[str, Any]) -> Tuple[str, str]:
    """(family, continuation prefix) from the model's type, its continuation
    prefix and the states of the other components."""
    component_types = {item.get("type", "") for state in states.values()
                       for item in walk_states(state)}
    if model_type == "WordPiece":
        return families.WORDPIECE, prefix or "##"
    if "ByteLevel" in component_types:
        return families.BYTELEVEL, ""
    if "Metaspace" in component_types or model_type == "Unigram":
        return families.SENTENCEPIECE, ""
    normalizer = states.get("normalizer")
    if any(item.get("type") == "Replace" and families.SENTENCEPIECE_SPACE in
           json.dumps(item.get("content", "")) for item in walk_states(normalizer)):
        return families.SENTENCEPIECE, ""
    if model_type == "BPE" and prefix:
        return families.WORDPIECE, prefix
    if model_type == "WordLevel":
        return families.WORDLEVEL, ""
    return families.UNKNOWN, ""


def casing_of(normalizer_state: Any) -> Tuple[bool, bool]:
    """(lowercase, strip_accents) of a normalizer state."""
    lowercase = strip = False
    for item in walk_states(normalizer_state):
        kind = item.get("type")
        if kind == "BertNormalizer":
            lowercase = lowercase or bool(item.get("lowercase"))
            accents = item.get("strip_accents")
            strip = strip or bool(item.get("lowercase") if accents is None else accents)
        elif kind == "Lowercase":
            lowercase = True
        elif kind == "StripAccents":
            strip = True
    return lowercase, strip


def roles_from_post_processor(state: Any) -> Dict[str, str]:
    roles = {}
    for item in walk_states(state):
        if item.get("type") in ("BertProcessing", "RobertaProcessing"):
            for role in ("cls", "sep"):
                value = item.get(role)
                if isinstance(value, list) and value:
                    roles[role] = value[0]
    return roles


def model_mapping(model: Dict[str, Any], name: str) -> Dict[str, int]:
    """The {token: id} of a tokenizer.json's model section (the document is
    freshly parsed and ours: its dict is used, and added to, as it is)."""
    entries = model.get("vocab")
    if isinstance(entries, dict):
        return entries
    mapping: Dict[str, int] = {}
    for index, entry in enumerate(entries):  # Unigram: [piece, score] in id order
        if not (isinstance(entry, list) and entry and isinstance(entry[0], str)):
            raise VocabError(f"{name}: model vocab entry {index} is {entry!r}, expected "
                             "[piece, score]")
        if mapping.setdefault(entry[0], index) != index:
            raise VocabError(f"{name}: piece {entry[0]!r} appears twice, at ids "
                             f"{mapping[entry[0]]} and {index}")
    return mapping


def added_tokens_of(document: Dict[str, Any], mapping: Dict[str, int],
                    name: str) -> List[Tuple[str, bool]]:
    """(content, special) of every added token; they join the mapping."""
    added = []
    listed = document.get("added_tokens") or []
    if not isinstance(listed, list):
        raise VocabError(f"{name}: added_tokens is {type(listed).__name__}, expected a list of "
                         "objects with content and id")
    for position, token in enumerate(listed):
        if not isinstance(token, dict):
            raise VocabError(f"{name}: added_tokens[{position}] is {token!r}, expected an "
                             "object with content and id")
        content, index = token.get("content"), token.get("id")
        if not isinstance(content, str):
            raise VocabError(f"{name}: added_tokens[{position}] has content {content!r}, "
                             "expected a string")
        if isinstance(index, bool) or not isinstance(index, int):
            raise VocabError(f"{name}: added token {content!r} has id {index!r}, expected an "
                             "int")
        if mapping.get(content, index) != index:
            raise VocabError(f"{name}: added token {content!r} has id {index} but the model "
                             f"gives it id {mapping[content]}")
        mapping[content] = index
        added.append((content, bool(token.get("special"))))
    return added


def vocab_from_document(document: Any, name: str, loader: Callable[[], Any],
                        describe: Callable[[], str]) -> Vocab:
    """A Vocab from a tokenizer's JSON form: its model's vocabulary, its
    added tokens, and what its components say about family, casing and
    special roles. `describe` explains a document that is not a tokenizer."""
    model = document.get("model") if isinstance(document, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("vocab"), (dict, list)):
        raise VocabError(f"{name}: {describe()}")
    mapping = model_mapping(model, name)
    added = added_tokens_of(document, mapping, name)
    tokens, ids = indexed(mapping, name, from_json=True)
    unk = model.get("unk_token")
    if model.get("type") == "Unigram" and isinstance(model.get("unk_id"), int) and \
            0 <= model["unk_id"] < len(tokens):
        unk = tokens[model["unk_id"]]
    states = {key: document.get(key) for key in COMPONENTS}
    prefix = model.get("continuing_subword_prefix") or ""
    family, prefix = family_of(str(model.get("type", "")), prefix, states)
    lowercase, strip = casing_of(states.get("normalizer"))
    special = frozenset(content for content, is_special in added if is_special)
    roles = roles_from_strings({token: ids[token] for token in special if token in ids})
    roles.update({role: token for role, token in
                  roles_from_post_processor(states.get("post_processor")).items()
                  if token in ids})
    if unk and unk in ids:
        roles.setdefault("unk", unk)
    return Vocab(tokens=tokens, ids=ids, name=name, family=family, special_tokens_map=roles,
                 all_special_tokens=special | frozenset(roles.values()),
                 added_tokens=frozenset(content for content, _ in added),
                 continuation_prefix=prefix, declared_lowercase=lowercase,
                 declared_strip_accents=strip,
                 loader=loader)


def from_tokenizers(tokenizer: Any, name: str) -> Vocab:
    """A ``tokenizers.Tokenizer``: its JSON form, read as a tokenizer.json."""
    document = json.loads(tokenizer.to_str())
    return vocab_from_document(document, name, lambda: tokenizer,
                               lambda: "this tokenizer has no model vocabulary")


def read_tokenizer_json(path: Path) -> Vocab:
    """A tokenizer.json, read as JSON; the Rust tokenizer is built only if
    something needs it (fvt, save)."""
    name = str(path)
    check_regular_file(path, MAX_JSON_BYTES["tokenizer"], VocabError, "a tokenizer.json")
    raw = path.read_bytes()
    try:
        document = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise VocabError(f"{name}: is nested deeper than any tokenizer.json") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise VocabError(f"{name}: {diagnose_tokenizer_json(path, error)}") from None
    if json_depth(document) > MAX_JSON_DEPTH:
        raise VocabError(f"{name}: is nested deeper than any tokenizer.json (at most "
                         f"{MAX_JSON_DEPTH} levels are read)")
    return vocab_from_document(
        document, name, lambda: load_tokenizer_file(path),
        lambda: diagnose_tokenizer_json(path, ValueError("no model vocabulary")))


def load_tokenizer_file(path: Path) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises plain Exception
        raise VocabError(f"{path}: {diagnose_tokenizer_json(path, error)}") from None


def diagnose_tokenizer_json(path: Path, error: Exception) -> str:
    """Why a file failed to load as tokenizer.json, in the user's terms."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        return (f"is not valid UTF-8 (byte 0x{raw[decode_error.start]:02x} at offset "
                f"{decode_error.start}); expected a tokenizer.json file")
    try:
        document = json.loads(text)
    except ValueError as json_error:
        return f"is not JSON ({json_error}); expected a tokenizer.json file"
    if not isinstance(document, dict) or "model" not in document:
        return ("is JSON but not a tokenizer.json (it has no \"model\" section); expected "
                "the file that tokenizers' Tokenizer.save writes")
    return f"could not be loaded as a tokenizer.json: {error}"


# ---- transformers tokenizers ---------------------------------------------------

def from_transformers(tokenizer: Any, name: str) -> Vocab:
    """A transformers tokenizer, fast (its backend) or slow (get_vocab once)."""
    roles = {role: getattr(tokenizer, f"{role}_token", None) for role in families.ROLES}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        vocab = from_tokenizers(backend, name)
    else:
        mapping = tokenizer.get_vocab()
        tokens = tokens_by_id(mapping, name)
        if hasattr(tokenizer, "sp_model"):
            family = families.SENTENCEPIECE
        elif hasattr(tokenizer, "byte_encoder"):
            family = families.BYTELEVEL
        elif hasattr(tokenizer, "wordpiece_tokenizer"):
            family = families.WORDPIECE
        else:
            family = families.guess_family_from_tokens(list(tokens))
        lowercase = bool(getattr(tokenizer, "do_lower_case", False))
        vocab = Vocab(tokens=tokens, ids=dict(mapping), name=name, family=family,
                      declared_lowercase=lowercase, declared_strip_accents=lowercase)
    # The transformers tokenizer names its roles itself: trust it over guesses.
    special_tokens_map = dict(vocab.special_tokens_map)
    special_tokens_map.update({role: str(token) for role, token in roles.items()
                               if token is not None and str(token) in vocab.ids})
    listed = frozenset(str(token) for token in getattr(tokenizer, "all_special_tokens", [])
                       if str(token) in vocab.ids)
    return replace(vocab, name=name, special_tokens_map=special_tokens_map,
                   all_special_tokens=(vocab.all_special_tokens | listed
                                       | frozenset(special_tokens_map.values())),
                   loader=lambda: tokenizer, settings=settings_of(tokenizer))


# ---- folders, files, hub ids ---------------------------------------------------------

def read_folder(folder: Path) -> Vocab:
    """A tokenizer folder: tokenizer.json if present, else vocab.txt; roles
    and casing from tokenizer_config.json / special_tokens_map.json, and its
    settings (tokenizer_settings.py: the chat template too). Every file read
    resolves inside the folder (untrusted.py)."""
    check_tokenizer_folder(folder)
    config = read_json_if_present(folder / "tokenizer_config.json")
    special_map = read_json_if_present(folder / "special_tokens_map.json")
    if (folder / "tokenizer.json").is_file():
        vocab = read_tokenizer_json(folder / "tokenizer.json")
    elif (folder / "vocab.txt").is_file():
        lowercase = config.get("do_lower_case") if isinstance(config, dict) else None
        vocab = read_vocab_txt(folder / "vocab.txt", lowercase=lowercase)
    else:
        raise VocabError(f"{folder}: the folder has neither tokenizer.json nor vocab.txt; "
                         "expected a tokenizer folder (as save_pretrained writes)")
    roles = dict(vocab.special_tokens_map)
    for source in (special_map, config):
        for role in families.ROLES:
            value = source.get(f"{role}_token") if isinstance(source, dict) else None
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and value in vocab.ids:
                roles[role] = value
    return replace(vocab, name=str(folder), special_tokens_map=roles,
                   all_special_tokens=vocab.all_special_tokens | frozenset(roles.values()),
                   settings=read_folder_settings(folder, config))


def read_json_if_present(path: Path) -> Any:
    if not path.is_file():
        return {}
    return read_json(path, "tokenizer", VocabError, f"a {path.name}")


def read_path(path: Path, lowercase: Optional[bool] = None) -> Vocab:
    if path.is_dir():
        return read_folder(path)
    if path.suffix == ".json":
        return read_tokenizer_json(path)
    return read_vocab_txt(path, lowercase=lowercase)


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def from_hub(identifier: str) -> Vocab:
    try:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(identifier)
    except Exception as error:
        raise VocabError(
            f"{identifier!r} is not a file or folder here, and loading it as a model hub id "
            f"failed ({type(error).__name__}: {first_line(error)}); pass a local tokenizer "
            "folder, tokenizer.json or vocab.txt instead") from None
    return from_transformers(tokenizer, identifier)


def looks_like_hub_id(text: str) -> bool:
    """"org/name" or "name", not something that names a local path."""
    parts = text.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not text.startswith((".", "~")) and \
        os.sep not in text.replace("/", "") and \
        not any(part.endswith((".txt", ".json")) for part in parts)


# ---- the entry point -------------------------------------------------------------

def load_vocab(source: VocabSource, *, family: Optional[str] = None,
               lowercase: Optional[bool] = None) -> Vocab:
    """Read a vocabulary once, from any of: a ``Vocab``; a transformers
    tokenizer (fast or slow); a ``tokenizers.Tokenizer`` or one of its
    implementations (``BertWordPieceTokenizer``, ...); a path to a
    tokenizer.json, a WordPiece vocab.txt or a tokenizer folder; a model hub
    id (where the network allows); or a ``{token: id}`` mapping.

    ``family`` and ``lowercase`` override what is detected (a mapping or a
    vocab.txt carries no configuration to detect them from).

    Raises VocabError (a ValueError) naming the source and what is wrong:
    an empty vocabulary, duplicate tokens, ids with gaps, a file that is not
    a vocabulary, bytes that are not UTF-8, a path that does not exist.
    """
    vocab = _load(source, lowercase)
    if family is not None or (lowercase is not None and lowercase != vocab.lowercase):
        if family is not None and family not in families.FAMILIES:
            raise VocabError(f"family {family!r} is not one of {', '.join(families.FAMILIES)}")
        vocab = replace(vocab, family=family or vocab.family,
                        declared_lowercase=vocab.lowercase if lowercase is None else lowercase,
                        declared_strip_accents=(vocab.strip_accents if lowercase is None
                                                else lowercase))
    return with_wordpiece_loader(vocab)


def _load(source: VocabSource, lowercase: Optional[bool]) -> Vocab:
    if isinstance(source, Vocab):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.exists():
            return read_path(path, lowercase)
        if isinstance(source, str) and looks_like_hub_id(source):
            return from_hub(source)
        raise VocabError(f"{source}: no such file or folder (expected a tokenizer folder, "
                         "tokenizer.json, vocab.txt or model hub id)")
    if isinstance(source, Mapping):
        name = "the {token: id} mapping"
        tokens = tokens_by_id(source, name)
        roles = roles_from_strings(source)
        return Vocab(tokens=tokens, ids=dict(source), name=name,
                     family=families.guess_family_from_tokens(list(tokens)),
                     special_tokens_map=roles, all_special_tokens=frozenset(roles.values()))
    from tokenizers import Tokenizer

    if isinstance(source, Tokenizer):
        return from_tokenizers(source, type(source).__name__)
    # Before the check for a wrapped Tokenizer: transformers' fast tokenizers
    # wrap one too, but name their special tokens' roles themselves.
    if hasattr(source, "get_vocab") and hasattr(source, "convert_tokens_to_ids"):
        return from_transformers(source, getattr(source, "name_or_path", "") or
                                 type(source).__name__)
    inner = getattr(source, "_tokenizer", None)  # tokenizers.implementations.*
    if isinstance(inner, Tokenizer):
        return from_tokenizers(inner, type(source).__name__)
    raise VocabError(f"cannot read a vocabulary from a {type(source).__name__}; expected a "
                     "tokenizer, tokenizer.json, vocab.txt, folder, hub id or {token: id} dict")
