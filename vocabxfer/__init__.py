"""vocabxfer: move a pretrained transformer to a new vocabulary.

Copy the pretrained vector of every token both vocabularies share with one
fused C++/CUDA row transfer, start the others from what the pretrained model
knows, and write a ready model folder.
"""

from .checkup import doctor
from .errors import VocabError
from .initialise import InitPlan, initialise_embeddings, plan_initialisation, transfer_embeddings
from .matching import MatchReport, TokenMap, match_vocab
from .model import ModelError, ModelTransfer, save, save_tokenizer, transfer_model
from .ops import has_compiled_ops, segment_mean_, transfer_rows_
from .training import CorpusError, train_tokenizer
from .vocab import Vocab, load_vocab

__all__ = [
    "CorpusError", "InitPlan", "MatchReport", "ModelError", "ModelTransfer", "TokenMap", "Vocab",
    "VocabError", "doctor", "has_compiled_ops", "initialise_embeddings", "load_vocab", "match_vocab",
    "plan_initialisation", "save", "save_tokenizer", "segment_mean_", "train_tokenizer",
    "transfer_embeddings", "transfer_model", "transfer_rows_",
]
__version__ = "0.1.0"
