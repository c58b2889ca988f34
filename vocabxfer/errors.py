"""The errors vocabxfer raises for bad input, besides the ops' own."""


class VocabError(ValueError):
    """A vocabulary could not be read or is not valid; the message names the
    source (file, folder or object) and what is wrong with it."""
