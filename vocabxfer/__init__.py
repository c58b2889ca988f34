"""vocabxfer: move a pretrained transformer to a new vocabulary.

Copy the pretrained vector of every token both vocabularies share with one
fused C++/CUDA row transfer, start the others from what the pretrained model
knows, and write a ready model folder.
"""

from .checkpoint import CheckpointTransfer, transfer_checkpoint
from .checkup import doctor
from .errors import CorpusError, ModelError, OutputError, VocabError, VocabxferError
from .fidelity import Fidelity, FidelityProbe
from .initialise import InitPlan, plan_initialisation, transfer_embeddings
from .loading import load_model
from .matching import MatchReport, TokenMap, match_vocab
from .model import ModelTransfer, transfer_model
from .ops import has_compiled_ops, segment_mean_, transfer_rows_
from .readers import load_vocab
from .refine import Refinement, refine
from .saving import save, save_tokenizer
from .training import train_tokenizer
from .vocab import Vocab
from .workflow import FolderTransfer, transfer_to_folder

__all__ = [
    "CheckpointTransfer", "CorpusError", "Fidelity", "FidelityProbe", "FolderTransfer",
    "InitPlan", "MatchReport", "ModelError",
    "ModelTransfer", "OutputError", "Refinement", "TokenMap", "Vocab", "VocabError",
    "VocabxferError", "doctor", "has_compiled_ops", "load_model", "load_vocab", "match_vocab",
    "plan_initialisation", "refine", "save", "save_tokenizer", "segment_mean_", "train_tokenizer",
    "transfer_checkpoint", "transfer_embeddings", "transfer_model", "transfer_rows_",
    "transfer_to_folder"
]
__version__ = "0.1.0"
