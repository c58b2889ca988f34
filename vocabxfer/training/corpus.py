"""Corpora: text files of one passage per line, streamed (a corpus larger
than memory is read as well as a small one), checked before any long step,
and passages given directly as strings."""

import os
import random
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator, List, Sequence, Union

from vocabxfer.errors import CorpusError

# Passages set aside to measure with: at most this many, and none from a
# corpus too small to spare this few.
HELD_OUT_PASSAGES, MIN_HELD_OUT = 200, 20

CorpusFiles = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


def corpus_paths(files: CorpusFiles) -> List[Path]:
    """The corpus files, checked to exist: one path or several."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    paths = [Path(file).expanduser() for file in files]
    if not paths:
        raise CorpusError("no corpus files were given")
    for path in paths:
        if not path.is_file():
            raise CorpusError(f"{path}: no such corpus file")
    return paths


def has_text(line: str) -> bool:
    """Whether a line holds a character that is neither white space nor a
    control, format or unassigned character."""
    if line.isprintable():
        return not line.isspace() and bool(line)
    return any(not char.isspace() and unicodedata.category(char)[0] != "C" for char in line)


def iter_passages(paths: Sequence[Path]) -> Iterator[str]:
    """The corpus's passages (lines with text), read lazily, file by file."""
    for path in paths:
        offset = 0
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as error:
                    raise CorpusError(
                        f"{path}: is not UTF-8 text (byte offset {offset + error.start}) on line "
                        f"{number} (byte 0x{raw[error.start]:02x}); expected a UTF-8 text file, "
                        "one passage per line") from None
                offset += len(raw)
                if has_text(line):
                    yield line


def check_corpus(paths: Sequence[Path]) -> None:
    """Fail early, before any long step: the corpus must hold some text (its
    UTF-8 is checked as it streams)."""
    if next(iter_passages(paths), None) is None:
        raise CorpusError(f"the corpus ({', '.join(str(p) for p in paths)}) has no text (only "
                          "empty lines, white space or control characters); expected one "
                          "passage per line")


Texts = Union[Sequence[str], str, os.PathLike, Sequence[Union[str, os.PathLike]]]


def read_texts(texts: Texts) -> List[str]:
    """Passages: a list of strings as they are (blank ones left out), or the
    lines of text files: one path (a str or a path object), or a list of
    path objects (``pathlib.Path``). A list of strings is always passages,
    even where a passage names a file: what a corpus holds is text, never
    an instruction to read something else."""
    if isinstance(texts, (str, os.PathLike)) or (
            texts and all(isinstance(text, os.PathLike) for text in texts)):
        return list(iter_passages(corpus_paths(texts)))
    if not all(isinstance(text, str) for text in texts):
        raise CorpusError("refine: texts must be passages (strings), or path objects of text "
                          "files, not a mixture")
    return [text for text in texts if text.strip()]


class Reservoir:
    """A uniform random sample of up to `size` items of a stream read once
    (reservoir sampling, so a corpus larger than memory works), and how
    many items it saw. `passing` lets the stream through to another reader
    while it samples."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.count = size, 0
        self.sample: List[str] = []
        self.random = random.Random(seed)

    def add(self, item: str) -> None:
        self.count += 1
        if len(self.sample) < self.size:
            self.sample.append(item)
        elif (slot := self.random.randrange(self.count)) < self.size:
            self.sample[slot] = item

    def passing(self, items: Iterable[str]) -> Iterator[str]:
        for item in items:
            self.add(item)
            yield item

    @classmethod
    def of(cls, items: Iterable[str], size: int, seed: int = 0) -> "Reservoir":
        reservoir = cls(size, seed)
        for item in items:
            reservoir.add(item)
        return reservoir


def hold_out(passages: Iterable[str], count: int = HELD_OUT_PASSAGES,
             seed: int = 0) -> List[str]:
    """A uniform random sample of up to `count` distinct passages, at most a
    tenth of the corpus (the rest must still teach), read in one pass (a
    reservoir), so a corpus larger than memory works. Empty for a corpus
    too small to spare MIN_HELD_OUT passages."""
    reservoir = Reservoir.of(passages, count, seed)
    sample = list(dict.fromkeys(reservoir.sample))
    reservoir.random.shuffle(sample)
    keep = min(len(sample), reservoir.count // 10)
    return sample[:keep] if keep >= MIN_HELD_OUT else []


def sample_passages(paths: Sequence[Path], seed: int,
                    count: int = HELD_OUT_PASSAGES) -> List[str]:
    """Up to `count` distinct passages of the files, drawn uniformly (a
    reservoir: the files are streamed)."""
    return Reservoir.of(dict.fromkeys(iter_passages(paths)), count, seed).sample
