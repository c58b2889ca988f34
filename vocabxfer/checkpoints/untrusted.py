"""Reading files from a folder that may be a stranger's (a model or
tokenizer folder, a hub cache snapshot): every file read resolves inside
its folder, is a regular file (never a FIFO or a device, which would hang
or never end), is bounded in size, and JSON is bounded in nesting depth.
The config's fields that the transfer uses are checked for type and range
before transformers builds anything from them, so a crafted config ends in
one error that names the field, not in a traceback or a wrong model.

The one exception to "inside the folder" is a real Hugging Face cache
layout, ``<repo>/snapshots/<revision>/`` whose files link into
``<repo>/blobs/``: links may lead there, but only when ``blobs`` is a real
folder of that same repo (not itself a link elsewhere).
"""

import json
import os
import stat
from pathlib import Path
from typing import Any, Dict, List, Optional, Type

from vocabxfer.errors import ModelError, VocabError, VocabxferError

# A tokenizer.json of a 256k-token vocabulary is about 35 MB; configs are
# a few kB. Anything past these is not what it claims to be.
MAX_JSON_BYTES = {"config": 16 * 2 ** 20, "tokenizer": 512 * 2 ** 20}
MAX_JSON_DEPTH = 64
# Files a vocabulary reader or transformers may read from a folder.
MAX_VOCAB_FILE_BYTES = 512 * 2 ** 20
MAX_ROWS = 2 ** 31 - 1
MAX_WIDTH = 2 ** 20
TOKEN_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id",
                   "cls_token_id", "mask_token_id", "unk_token_id",
                   "decoder_start_token_id")
POSITIVE_FIELDS = ("hidden_size", "num_attention_heads", "intermediate_size",
                   "max_position_embeddings", "num_key_value_heads", "head_dim", "d_model")
COUNT_FIELDS = ("num_hidden_layers",)


def allowed_roots(folder: Path) -> List[Path]:
    """Where files read from `folder` may resolve to: the folder, and the
    blobs of a real hub cache repo it is a snapshot of."""
    folder = folder.resolve()
    roots = [folder]
    snapshots = folder.parent
    repo = snapshots.parent
    blobs = repo / "blobs"
    if snapshots.name == "snapshots" and not snapshots.is_symlink() and \
            blobs.is_dir() and not blobs.is_symlink() and blobs.resolve().parent == repo:
        roots.append(blobs.resolve())
    return roots


def check_inside(folder: Path, path: Path, error: Type[VocabxferError]) -> None:
    """`path` (in `folder`) must resolve inside the folder's allowed roots:
    a link that leads elsewhere is refused, not followed."""
    real = path.resolve()
    if not any(real == root or real.is_relative_to(root) for root in allowed_roots(folder)):
        kind = "tokenizer" if error is VocabError else "model"
        raise error(f"{folder}: {path.name} is a link to {real}, outside the {kind} folder; "
                    "refusing to read it (copy the file into the folder if it is meant)")


def check_model_folder(folder: Path, error: Type[VocabxferError] = ModelError) -> None:
    """Every entry of a model or tokenizer folder (and of its subfolders)
    that is a link must stay inside the folder, and none may be a FIFO,
    socket or device: transformers reads files by name from the folder,
    and any of them would leak outside data into the output, or hang."""
    folder = folder.resolve()
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(parent) / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                check_inside(folder, path, error)
                info = os.stat(path) if path.exists() else info
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
                    or stat.S_ISLNK(info.st_mode)):
                raise error(f"{folder}: {path.relative_to(folder)} is not a regular file (a "
                            "FIFO, socket or device); a model folder holds files only")


def check_regular_file(path: Path, limit: int, error: Type[VocabxferError],
                       what: str) -> None:
    """A file to read whole: a regular file (after links) of at most `limit`
    bytes. A FIFO would hang the read, /dev/zero would never end it."""
    try:
        info = os.stat(path)
    except OSError as failure:
        raise error(f"{path}: cannot be read ({failure.strerror or failure})") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: is not a regular file (a FIFO, socket, device or folder); "
                    f"expected {what}")
    if info.st_size > limit:
        raise error(f"{path}: holds {info.st_size:,} bytes, more than the {limit:,} of any "
                    f"real {what}")


def json_depth(document: Any) -> int:
    """The nesting depth of a parsed JSON document, walked without
    recursion."""
    deepest, pending = 0, [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        pending.extend((child, depth + 1) for child in children)
    return deepest


def read_json(path: Path, kind: str, error: Type[VocabxferError], what: str) -> Any:
    """A JSON file of `kind` ("config" or "tokenizer"), checked: a regular
    file within its size bound, UTF-8, valid JSON, nested at most
    MAX_JSON_DEPTH deep."""
    check_regular_file(path, MAX_JSON_BYTES[kind], error, what)
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise error(f"{path}: is nested deeper than any {what} "
                    f"(at most {MAX_JSON_DEPTH} levels are read)") from None
    except (UnicodeDecodeError, ValueError) as failure:
        raise error(f"{path}: is not valid JSON ({failure}); expected {what}") from None
    if json_depth(document) > MAX_JSON_DEPTH:
        raise error(f"{path}: is nested deeper than any {what} "
                    f"(at most {MAX_JSON_DEPTH} levels are read)")
    return document


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_token_ids(document: Dict[str, Any], vocab_size: Optional[int], name: str) -> None:
    for field in TOKEN_ID_FIELDS:
        value = document.get(field)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not _is_int(item) or item < 0 or (vocab_size is not None and item >= vocab_size):
                bound = f" below vocab_size {vocab_size}" if vocab_size is not None else ""
                raise ModelError(f"{name}: {field} is {value!r}; expected null or a token id "
                                 f"(an int from 0{bound}), or a list of them")


def check_config_document(document: Any, name: str) -> None:
    """The fields of a config.json that the transfer relies on: types and
    ranges, so that a crafted value is refused with its name."""
    if not isinstance(document, dict):
        raise ModelError(f"{name}: is a JSON {type(document).__name__}; expected an object "
                         "(a model's config.json)")
    vocab_size = document.get("vocab_size")
    if "vocab_size" in document and not (_is_int(vocab_size) and 0 < vocab_size <= MAX_ROWS):
        raise ModelError(f"{name}: vocab_size is {vocab_size!r}; expected a positive int (the "
                         "number of embedding rows)")
    for field in POSITIVE_FIELDS:
        if field in document and document[field] is not None and not (
                _is_int(document[field]) and 0 < document[field] <= MAX_ROWS):
            raise ModelError(f"{name}: {field} is {document[field]!r}; expected a positive int")
    for field in COUNT_FIELDS:
        if field in document and not (_is_int(document[field]) and
                                      0 <= document[field] <= MAX_WIDTH):
            raise ModelError(f"{name}: {field} is {document[field]!r}; expected an int >= 0")
    hidden, heads = document.get("hidden_size"), document.get("num_attention_heads")
    if _is_int(hidden) and hidden > MAX_WIDTH:
        raise ModelError(f"{name}: hidden_size is {hidden}; expected at most {MAX_WIDTH:,}")
    if _is_int(hidden) and _is_int(heads) and "head_dim" not in document and hidden % heads:
        raise ModelError(f"{name}: hidden_size {hidden} is not a multiple of "
                         f"num_attention_heads {heads}; expected a config that builds a model")
    quantization = document.get("quantization_config")
    if quantization is not None:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else None
        raise ModelError(f"{name}: declares quantization_config ({method or quantization}); "
                         "vocabxfer moves float checkpoints, and transformers could not save "
                         "this one after the transfer. Dequantize it first (load it, drop "
                         "quantization_config, save_pretrained), or remove a quantization_config "
                         "left over from a conversion")
    tie = document.get("tie_word_embeddings")
    if tie is not None and not isinstance(tie, bool):
        raise ModelError(f"{name}: tie_word_embeddings is {tie!r}; expected true or false")
    _check_token_ids(document, vocab_size if _is_int(vocab_size) else None, name)


def read_config(folder: Path) -> Dict[str, Any]:
    """A model folder's config.json, read and checked (see
    check_config_document)."""
    path = folder / "config.json"
    if not (path.exists() or path.is_symlink()):
        raise ModelError(f"{folder}: has no config.json; expected a model folder (as "
                         "save_pretrained writes)")
    check_inside(folder, path, ModelError)
    document = read_json(path, "config", ModelError, "a model's config.json")
    check_config_document(document, str(path))
    return document


def check_generation_config(folder: Path, vocab_size: Optional[int]) -> None:
    """A generation_config.json, where there is one: inside the folder, a
    JSON object, its token ids within the vocabulary."""
    path = folder / "generation_config.json"
    if not (path.exists() or path.is_symlink()):
        return
    check_inside(folder, path, ModelError)
    document = read_json(path, "config", ModelError, "a generation_config.json")
    if not isinstance(document, dict):
        raise ModelError(f"{path}: is a JSON {type(document).__name__}; expected an object")
    _check_token_ids(document, vocab_size, str(path))


def check_tokenizer_folder(folder: Path) -> None:
    """A tokenizer folder given as a target or source: its links stay inside
    it, and its JSON files are bounded."""
    check_model_folder(folder, VocabError)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.exists():
            check_regular_file(path, MAX_JSON_BYTES["tokenizer"], VocabError, f"a {name}")
