"""vocabxfer: move a pretrained transformer to a new vocabulary."""

from .errors import VocabError
from .matching import MatchReport, TokenMap, match_vocab
from .ops import has_compiled_ops, segment_mean_, transfer_rows_
from .vocab import Vocab, load_vocab

__all__ = ["MatchReport", "TokenMap", "Vocab", "VocabError", "has_compiled_ops",
           "load_vocab", "match_vocab", "segment_mean_", "transfer_rows_"]
__version__ = "0.1.0"
