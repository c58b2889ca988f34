"""A tokenizer's string vocabulary, read once from whatever the user has."""

import json
import os
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union

from . import families
from .errors import VocabError

BRACKETED = re.compile(r"\[[A-Za-z0-9_]+\]")

VocabSource = Union["Vocab", str, os.PathLike, Mapping[str, int], Any]


@dataclass(frozen=True)
class Vocab:
    """A vocabulary: token string by id and id by token string, the special
    tokens with their roles, the added tokens and the tokenizer family.

    ``tokenizer`` is the tokenizer it was read from (a ``tokenizers.Tokenizer``
    or a transformers tokenizer), when there was one: it lets unmatched
    tokens be re-tokenized by the source model's own rules. It is loaded on
    first use (``loader``): matching alone never pays for it.
    """

    tokens: Tuple[str, ...]
    ids: Dict[str, int]
    name: str
    family: str = families.UNKNOWN
    specials: Dict[str, str] = field(default_factory=dict)
    special_tokens: FrozenSet[str] = frozenset()
    added_tokens: FrozenSet[str] = frozenset()
    continuation_prefix: str = "##"
    lowercase: bool = False
    strip_accents: bool = False
    loader: Optional[Callable[[], Any]] = field(default=None, compare=False, repr=False)

    @cached_property
    def tokenizer(self) -> Any:
        return self.loader() if self.loader is not None else None

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.ids

    def __repr__(self) -> str:
        return (f"Vocab({self.name!r}, size={len(self)}, family={self.family!r}, "
                f"lowercase={self.lowercase}, specials={self.specials})")

    def role_of(self, token: str) -> Optional[str]:
        for role, special in self.specials.items():
            if special == token:
                return role
        return None


# ---- building and checking -------------------------------------------------

def tokens_by_id(mapping: Mapping[str, int], name: str) -> Tuple[str, ...]:
    """The mapping's tokens ordered by id; ids must be exactly 0..size-1."""
    if not mapping:
        raise VocabError(f"{name}: the vocabulary is empty")
    size = len(mapping)
    ids = mapping.values()
    try:
        valid = (all(isinstance(key, str) for key in mapping)
                 and min(ids) == 0 and max(ids) == size - 1 and len(set(ids)) == size
                 and all(type(index) is int for index in ids))
    except TypeError:
        valid = False
    if not valid:
        explain_bad_ids(mapping, name)
    tokens: List[str] = [""] * size
    for token, index in mapping.items():
        tokens[index] = token
    return tuple(tokens)


def explain_bad_ids(mapping: Mapping[str, int], name: str) -> None:
    """Raise the error that says which token breaks the 0..size-1 rule."""
    size = len(mapping)
    owner: Dict[int, str] = {}
    for token, index in mapping.items():
        if not isinstance(token, str):
            raise VocabError(f"{name}: token {token!r} is not a string")
        if isinstance(index, bool) or not isinstance(index, int):
            raise VocabError(f"{name}: token {token!r} has id {index!r}, expected an int")
        if not 0 <= index < size:
            raise VocabError(f"{name}: token {token!r} has id {index}, but a vocabulary of "
                             f"{size} tokens needs ids 0..{size - 1} without gaps")
        if index in owner:
            raise VocabError(f"{name}: tokens {owner[index]!r} and {token!r} share id "
                             f"{index}; every id must name one token")
        owner[index] = token
    raise VocabError(f"{name}: ids are not 0..{size - 1}")  # pragma: no cover


def roles_from_strings(ids: Mapping[str, int]) -> Dict[str, str]:
    """Roles of the well-known special strings the vocabulary holds; where
    two strings claim a role, the lower id wins."""
    roles: Dict[str, str] = {}
    for token, role in families.ROLE_OF_STRING.items():
        if token in ids and (role not in roles or ids[token] < ids[roles[role]]):
            roles[role] = token
    return roles


def detect_lowercase(tokens: Tuple[str, ...]) -> bool:
    """A WordPiece vocab.txt does not say whether it is uncased; an uncased
    one holds no upper-case letters outside bracketed special tokens
    ([CLS], [unused0], ...)."""
    text = BRACKETED.sub("", "\n".join(tokens))
    return text == text.lower()


# ---- vocab.txt ---------------------------------------------------------------

def read_vocab_txt(path: Path, lowercase: Optional[bool] = None) -> Vocab:
    """A WordPiece vocab.txt: one token per line, the line number is the id."""
    name = str(path)
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
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise VocabError(f"{name}: the vocabulary is empty (expected one token per line)")
    ids = dict(zip(lines, range(len(lines))))
    if len(ids) != len(lines) or "" in ids:
        explain_bad_lines(lines, name)
    tokens = tuple(lines)
    specials = roles_from_strings(ids)
    special_tokens = frozenset(specials.values())
    if lowercase is None:
        lowercase = detect_lowercase(tokens)
    return Vocab(tokens=tokens, ids=ids, name=name, family=families.WORDPIECE,
                 specials=specials, special_tokens=special_tokens, lowercase=lowercase,
                 strip_accents=lowercase)


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


# ---- tokenizers.Tokenizer and tokenizer.json -------------------------------------

def component_state(component: Any) -> Any:
    """The JSON description of a tokenizer component (normalizer, decoder,
    ...), which its Python wrapper does not otherwise expose."""
    if component is None:
        return None
    try:
        return json.loads(component.__getstate__())
    except (AttributeError, TypeError, ValueError):
        return None


def walk_states(state: Any):
    """Every component in a (possibly nested) Sequence state."""
    if isinstance(state, dict):
        yield state
        for key in ("normalizers", "pretokenizers", "pre_tokenizers", "decoders",
                    "processors"):
            for child in state.get(key) or []:
                yield from walk_states(child)


def state_types(state: Any) -> List[str]:
    return [item.get("type", "") for item in walk_states(state)]


def family_of(model_type: str, prefix: str, states: Dict[str, Any]) -> Tuple[str, str]:
    """(family, continuation prefix) from the model's type, its continuation
    prefix and the states of the other components."""
    component_types = set()
    for state in states.values():
        component_types.update(state_types(state))
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


COMPONENTS = ("normalizer", "pre_tokenizer", "decoder", "post_processor")


def vocab_from_parts(name: str, tokens: Tuple[str, ...], added: List[Tuple[str, bool]],
                     model_type: str, prefix: str, unk: Optional[str],
                     states: Dict[str, Any], loader: Callable[[], Any]) -> Vocab:
    """A Vocab from what a tokenizer.json (or a Tokenizer) says of itself."""
    ids = dict(zip(tokens, range(len(tokens))))
    special_tokens = frozenset(content for content, special in added if special)
    family, prefix = family_of(model_type, prefix, states)
    lowercase, strip = casing_of(states.get("normalizer"))
    specials = roles_from_strings({token: ids[token] for token in special_tokens if token in ids})
    specials.update({role: token for role, token in
                     roles_from_post_processor(states.get("post_processor")).items()
                     if token in ids})
    if unk and unk in ids:
        specials.setdefault("unk", unk)
    return Vocab(tokens=tokens, ids=ids, name=name, family=family, specials=specials,
                 special_tokens=special_tokens | frozenset(specials.values()),
                 added_tokens=frozenset(content for content, _ in added),
                 continuation_prefix=prefix, lowercase=lowercase, strip_accents=strip,
                 loader=loader)


def from_tokenizers(tokenizer: Any, name: str) -> Vocab:
    """A ``tokenizers.Tokenizer``: read its vocabulary once (O(V))."""
    # id_to_token over the ids costs half of get_vocab(), which builds its
    # dict through a slower path.
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    listed = [tokenizer.id_to_token(index) for index in range(size)]
    if None in listed or len(set(listed)) != size:
        tokens = tokens_by_id(tokenizer.get_vocab(with_added_tokens=True), name)
    else:
        tokens = tuple(listed)
    added = [(token.content, token.special)
             for token in tokenizer.get_added_tokens_decoder().values()]
    states = {key: component_state(getattr(tokenizer, key, None)) for key in COMPONENTS}
    model = tokenizer.model
    return vocab_from_parts(name, tokens, added, type(model).__name__,
                            getattr(model, "continuing_subword_prefix", None) or "",
                            getattr(model, "unk_token", None), states, lambda: tokenizer)


def read_tokenizer_json(path: Path) -> Vocab:
    """A tokenizer.json, read as JSON: half the time of building the Rust
    tokenizer, which is loaded only if something needs it (fvt, save)."""
    name = str(path)
    raw = path.read_bytes()
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise VocabError(f"{name}: {diagnose_tokenizer_json(path, error)}") from None
    model = document.get("model") if isinstance(document, dict) else None
    entries = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(entries, (dict, list)):
        raise VocabError(f"{name}: {diagnose_tokenizer_json(path, ValueError('no vocab'))}")
    if isinstance(entries, list):  # Unigram: [piece, score] in id order
        mapping = {}
        for index, entry in enumerate(entries):
            if not (isinstance(entry, list) and entry and isinstance(entry[0], str)):
                raise VocabError(f"{name}: model vocab entry {index} is {entry!r}, expected "
                                 "[piece, score]")
            if mapping.setdefault(entry[0], index) != index:
                raise VocabError(f"{name}: piece {entry[0]!r} appears twice, at ids "
                                 f"{mapping[entry[0]]} and {index}")
    else:
        mapping = dict(entries)
    added = []
    for token in document.get("added_tokens") or []:
        content, index = token.get("content"), token.get("id")
        if mapping.get(content, index) != index:
            raise VocabError(f"{name}: added token {content!r} has id {index} but the model "
                             f"gives it id {mapping[content]}")
        mapping[content] = index
        added.append((content, bool(token.get("special"))))
    tokens = tokens_by_id(mapping, name)
    unk = model.get("unk_token")
    if model.get("type") == "Unigram" and isinstance(model.get("unk_id"), int) and \
            0 <= model["unk_id"] < len(tokens):
        unk = tokens[model["unk_id"]]
    states = {key: document.get(key) for key in COMPONENTS}
    return vocab_from_parts(name, tokens, added, str(model.get("type", "")),
                            model.get("continuing_subword_prefix") or "", unk, states,
                            lambda: load_tokenizer_file(path))


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


# ---- transformers tokenizers -----------------------------------------------------

def from_transformers(tokenizer: Any, name: str) -> Vocab:
    """A transformers tokenizer, fast (its backend) or slow (get_vocab once)."""
    roles = {role: getattr(tokenizer, f"{role}_token", None) for role in families.ROLES}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        vocab = from_tokenizers(backend, name)
        mapping = vocab.ids
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
                      lowercase=lowercase, strip_accents=lowercase)
    # The transformers tokenizer names its roles itself: trust it over guesses.
    specials = dict(vocab.specials)
    specials.update({role: str(token) for role, token in roles.items()
                     if token is not None and str(token) in mapping})
    special_tokens = vocab.special_tokens | frozenset(
        str(token) for token in getattr(tokenizer, "all_special_tokens", []) if str(token) in mapping)
    return replace(vocab, name=name, specials=specials,
                   special_tokens=special_tokens | frozenset(specials.values()),
                   loader=lambda: tokenizer)


# ---- folders, files, hub ids -------------------------------------------------

def read_folder(folder: Path) -> Vocab:
    """A tokenizer folder: tokenizer.json if present, else vocab.txt; roles
    and casing from tokenizer_config.json / special_tokens_map.json."""
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
    specials = dict(vocab.specials)
    for source in (special_map, config):
        for role in families.ROLES:
            value = source.get(f"{role}_token") if isinstance(source, dict) else None
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and value in vocab.ids:
                specials[role] = value
    return replace(vocab, name=str(folder), specials=specials,
                   special_tokens=vocab.special_tokens | frozenset(specials.values()))


def read_json_if_present(path: Path) -> Any:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise VocabError(f"{path}: is not valid JSON ({error})") from None


def read_path(path: Path, lowercase: Optional[bool] = None) -> Vocab:
    if path.is_dir():
        return read_folder(path)
    if path.suffix == ".json":
        return read_tokenizer_json(path)
    return read_vocab_txt(path, lowercase=lowercase)


def from_hub(identifier: str) -> Vocab:
    try:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(identifier)
    except Exception as error:
        raise VocabError(
            f"{identifier!r} is not a file or folder here, and loading it as a model hub id "
            f"failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            "pass a local tokenizer folder, tokenizer.json or vocab.txt instead") from None
    return from_transformers(tokenizer, identifier)


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not text.startswith((".", "~")) and \
        not any(part.endswith((".txt", ".json")) for part in parts)


# ---- the entry point -------------------------------------------------------

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
                        lowercase=vocab.lowercase if lowercase is None else lowercase,
                        strip_accents=vocab.strip_accents if lowercase is None else lowercase)
    return vocab


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
        tokens = tokens_by_id(source, "the {token: id} mapping")
        specials = roles_from_strings(source)
        return Vocab(tokens=tokens, ids=dict(source), name="the {token: id} mapping",
                     family=families.guess_family_from_tokens(list(tokens)), specials=specials,
                     special_tokens=frozenset(specials.values()))
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
