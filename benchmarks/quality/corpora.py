"""English corpora every machine of this project has, for quality figures:

- python-docs: Python's own documentation (the help() topics and the
  standard library's docstrings), as the demo uses it;
- man-pages: the Unix manual pages under /usr/share/man (sections 1, 5, 7
  and 8, English), turned from troff into plain paragraphs.

Each is a list of distinct passages in a fixed order.
"""

import gzip
import re
from pathlib import Path
from typing import Iterator, List

from vocabxfer.cli.demo import MIN_PASSAGE_CHARS, clean_passage, python_docs_passages

MAN_ROOT = Path("/usr/share/man")
MAN_SECTIONS = ("man1", "man5", "man7", "man8")
MAX_MAN_PASSAGES = 40_000
PASSAGES_PER_PAGE = 30
# Thousands of generated, near-identical pages of one tool would drown the
# rest of the manual.
SKIPPED_PAGE_PREFIXES = ("gcloud", "bq")

BREAKS = {"PP", "P", "LP", "TP", "IP", "HP", "SH", "SS", "sp", "br", "RS", "RE", "nf", "fi",
          "TH", "in", "ti", "EX", "EE", "Vb", "Ve", "TS", "TE"}
FONT_MACROS = {"B", "I", "BI", "BR", "IB", "IR", "RB", "RI", "SM", "SB"}
ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),   # font changes
    (re.compile(r"\\s[+-]?\d+"), ""),              # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),  # strings
    (re.compile(r"\\\(em|\\\(en"), "-"),
    (re.compile(r"\\\(aq"), "'"),
    (re.compile(r"\\\(lq|\\\(rq|\\\(dq"), '"'),
    (re.compile(r"\\\(.."), ""),                   # other special characters
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\[,/&|^c%:]"), ""),
    (re.compile(r"\\ "), " "),
]


def troff_text(line: str) -> str:
    for pattern, replacement in ESCAPES:
        line = pattern.sub(replacement, line)
    return line.replace("\\", "")


def man_paragraphs(source: str) -> Iterator[str]:
    """Paragraphs of a man page's troff source, as plain text."""
    paragraph: List[str] = []
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\\\"')):
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].strip().partition(" ")
            if macro in FONT_MACROS and rest:
                paragraph.append(troff_text(rest.replace('"', "")))
                continue
            if macro in BREAKS and paragraph:
                yield " ".join(paragraph)
                paragraph = []
            continue
        if line.strip():
            paragraph.append(troff_text(line))
        elif paragraph:
            yield " ".join(paragraph)
            paragraph = []
    if paragraph:
        yield " ".join(paragraph)


def is_prose(passage: str) -> bool:
    """Sentences rather than option tables or code: mostly letters and
    spaces, several words."""
    letters = sum(char.isalpha() or char.isspace() for char in passage)
    return len(passage.split()) >= 6 and letters >= 0.8 * len(passage)


def man_page_passages(root: Path = MAN_ROOT, limit: int = MAX_MAN_PASSAGES) -> List[str]:
    seen = set()
    passages: List[str] = []
    for section in MAN_SECTIONS:
        for path in sorted((root / section).glob("*.gz")):
            if path.is_symlink() or path.name.startswith(SKIPPED_PAGE_PREFIXES):
                continue
            try:
                source = gzip.decompress(path.read_bytes()).decode("utf-8")
            except (OSError, UnicodeDecodeError, EOFError):
                continue
            if source.lstrip().startswith(".so "):
                continue  # a page that only includes another
            taken = 0
            for paragraph in man_paragraphs(source):
                passage = clean_passage(paragraph)
                if len(passage) >= MIN_PASSAGE_CHARS and is_prose(passage) and \
                        passage not in seen:
                    seen.add(passage)
                    passages.append(passage)
                    taken += 1
                    if len(passages) >= limit:
                        return passages
                    if taken >= PASSAGES_PER_PAGE:
                        break
    return passages


CORPORA = {"python-docs": python_docs_passages, "man-pages": man_page_passages}


def available() -> List[str]:
    names = ["python-docs"]
    if any((MAN_ROOT / section).is_dir() for section in MAN_SECTIONS):
        names.append("man-pages")
    return names
