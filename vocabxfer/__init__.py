"""vocabxfer: move a pretrained transformer to a new vocabulary.

Copy the pretrained vector of every token both vocabularies share with one
fused C++/CUDA row transfer, start the others from what the pretrained model
knows, optionally refine them, and write a ready model folder.

The verbs, from the whole job down to the op:

- ``transfer_to_folder``: a model folder (or hub id) to a ready folder, with
  option objects ``InitOptions``, ``RefineSettings`` and
  ``TokenizerTraining``;
- ``transfer_model`` (in memory), ``transfer_checkpoint`` (streamed),
  ``refine``, ``save``;
- ``load_vocab``, ``match_vocab``, ``plan_initialisation``,
  ``transfer_embeddings``, ``train_tokenizer``;
- the row ops ``transfer_rows_`` and ``segment_mean_``.

The subpackages show the architecture (see ARCHITECTURE.md): ops,
vocabularies, initialisation, models, checkpoints, refinement, training,
cli.
"""

from vocabxfer.checkpoints.saving import save, save_tokenizer
from vocabxfer.checkpoints.streamed import transfer_checkpoint
from vocabxfer.cli.jobs import extend_to_folder, transfer_to_folder
from vocabxfer.errors import CorpusError, ModelError, OutputError, VocabError, VocabxferError
from vocabxfer.initialisation.options import InitOptions
from vocabxfer.initialisation.plan import plan_initialisation, transfer_embeddings
from vocabxfer.models.in_memory import transfer_model
from vocabxfer.models.loading import load_model
from vocabxfer.ops.doctor import doctor
from vocabxfer.ops.rows import has_compiled_ops, segment_mean_, transfer_rows_
from vocabxfer.refinement.loop import refine
from vocabxfer.refinement.settings import RefineSettings
from vocabxfer.training.extension import extend_tokenizer
from vocabxfer.training.tokenizer import TokenizerTraining, train_tokenizer
from vocabxfer.vocabularies.matching import TokenMap, match_vocab
from vocabxfer.vocabularies.readers import load_vocab
from vocabxfer.vocabularies.vocab import Vocab

__all__ = [
    # the whole job, and its option objects
    "transfer_to_folder", "extend_to_folder", "InitOptions", "RefineSettings",
    "TokenizerTraining",
    # the steps
    "transfer_model", "transfer_checkpoint", "refine", "save", "save_tokenizer",
    "load_model", "load_vocab", "match_vocab", "plan_initialisation", "transfer_embeddings",
    "train_tokenizer", "extend_tokenizer",
    # the ops
    "transfer_rows_", "segment_mean_", "has_compiled_ops", "doctor",
    # what the verbs take beside paths and models (their results live in
    # their modules: vocabxfer.cli.jobs.FolderTransfer, ...)
    "TokenMap", "Vocab",
    # what they raise
    "VocabxferError", "VocabError", "ModelError", "CorpusError", "OutputError",
]
__version__ = "0.1.0"
