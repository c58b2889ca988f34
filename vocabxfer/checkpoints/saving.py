"""Writes a model or tokenizer folder that transformers loads as it is,
atomically (see atomic.py)."""

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from vocabxfer.checkpoints.atomic import write_folder
from vocabxfer.checkpoints.companions import copy_companions
from vocabxfer.vocabularies.as_transformers import as_transformers_tokenizer
from vocabxfer.vocabularies.readers import VocabSource


def save_tokenizer(tokenizer: VocabSource, out_dir: Union[str, os.PathLike], *,
                   overwrite: bool = False) -> Path:
    """Write a tokenizer folder that AutoTokenizer loads, atomically."""
    wrapped = as_transformers_tokenizer(tokenizer)
    return write_folder(out_dir, lambda folder: wrapped.save_pretrained(str(folder)),
                        overwrite=overwrite)


def save(model: Any, target_tokenizer: VocabSource, out_dir: Union[str, os.PathLike],
         *, overwrite: bool = False, extra_files: Optional[Dict[str, str]] = None,
         companions: Optional[Mapping[str, Path]] = None) -> Path:
    """Write `model` (safetensors + config) and the target tokenizer to
    `out_dir`, so that ``AutoModel.from_pretrained(out_dir)`` and
    ``AutoTokenizer.from_pretrained(out_dir)`` load it offline.

    The folder appears whole or not at all, even if the process is killed or
    the power fails: it is written under a hidden name beside `out_dir`,
    flushed to disk, and moved into place in one step. An existing non-empty
    folder is replaced only with ``overwrite=True``, and only once the new
    one is complete; a symbolic link is refused. Raises FileExistsError or
    OutputError otherwise. ``extra_files`` (name: text) are written beside
    them, in the same step, and ``companions`` (name in the folder: file,
    see companions.read_companions) copied there as they are.
    """
    tokenizer = as_transformers_tokenizer(target_tokenizer)

    def write(folder: Path) -> None:
        model.save_pretrained(str(folder), safe_serialization=True)
        # safetensors (0.8.1 on) creates its files as 0600 whatever the
        # umask: a folder that others (a team, a container's user) could
        # not load the weights of. They get the mode every other file here
        # gets. Only files save_pretrained just made in our staging folder.
        mode = ordinary_file_mode(folder)
        for weights in folder.glob("*.safetensors"):
            os.chmod(weights, mode)
        tokenizer.save_pretrained(str(folder))
        for name, text in (extra_files or {}).items():
            (folder / name).write_text(text, encoding="utf-8")
        copy_companions(companions or {}, folder)

    return write_folder(out_dir, write, overwrite=overwrite)


def ordinary_file_mode(folder: Path) -> int:
    """The permission bits a file created in `folder` with open() gets (0o666
    less the umask, or as the folder's default ACL says), read from a file
    made for the purpose: the process's umask is never changed, which
    another thread could observe."""
    probe = folder / ".vocabxfer-mode-probe"
    descriptor = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        return os.fstat(descriptor).st_mode & 0o777
    finally:
        os.close(descriptor)
        probe.unlink()
