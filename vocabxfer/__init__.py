"""vocabxfer: move a pretrained transformer to a new vocabulary."""

from .ops import has_compiled_ops, segment_mean_, transfer_rows_

__all__ = ["has_compiled_ops", "segment_mean_", "transfer_rows_"]
__version__ = "0.1.0"
