"""Every error vocabxfer raises for bad input, besides the ops' own (which
raise TypeError, IndexError and ValueError as torch ops do).

All derive from VocabxferError, a ValueError: the command line turns these
(and OSError, for files) into one line and exit status 2, and lets anything
else, a bug, show its traceback.
"""


class VocabxferError(ValueError):
    """Bad input to vocabxfer; the message says what was wrong and what was
    expected."""


class VocabError(VocabxferError):
    """A vocabulary could not be read or is not valid; the message names the
    source (file, folder or object) and what is wrong with it."""


class ModelError(VocabxferError):
    """The model cannot be loaded or transferred as asked: the message says why."""


class CorpusError(VocabxferError):
    """The corpus cannot be used: missing, unreadable, empty, or too short."""


class OutputError(VocabxferError):
    """The output folder cannot be written as asked (it exists, is a link,
    lies inside the input, or its parent is a file)."""
