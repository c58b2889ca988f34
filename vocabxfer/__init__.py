"""vocabxfer: move a pretrained transformer to a new vocabulary.

Copy the pretrained vector of every token both vocabularies share with one
fused C++/CUDA row transfer, start the others from what the pretrained model
knows, and write a ready model folder.
"""

from vocabxfer.checkpoints.streamed import CheckpointTransfer, transfer_checkpoint
from vocabxfer.ops.doctor import doctor
from vocabxfer.errors import CorpusError, ModelError, OutputError, VocabError, VocabxferError
from vocabxfer.refinement.fidelity import Fidelity, FidelityProbe
from vocabxfer.initialisation.plan import InitPlan, plan_initialisation, transfer_embeddings
from vocabxfer.models.loading import load_model
from vocabxfer.vocabularies.matching import MatchReport, TokenMap, match_vocab
from vocabxfer.models.in_memory import ModelTransfer, transfer_model
from vocabxfer.ops.rows import has_compiled_ops, segment_mean_, transfer_rows_
from vocabxfer.vocabularies.readers import load_vocab
from vocabxfer.refinement.loop import Refinement, refine
from vocabxfer.checkpoints.saving import save, save_tokenizer
from vocabxfer.training.tokenizer import train_tokenizer
from vocabxfer.vocabularies.vocab import Vocab
from vocabxfer.cli.jobs import FolderTransfer, transfer_to_folder

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
