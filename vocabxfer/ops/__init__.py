"""The compiled core's Python face: the two row ops (``transfer_rows_``,
``segment_mean_``), their one schema and fake kernels, the argument checks
the fallback and fake kernels share with the C++ ones, the pure-torch
fallback, what ``_C`` was built as, and ``vocabxfer doctor``."""

from vocabxfer.ops.rows import has_compiled_ops, segment_mean_, transfer_rows_

__all__ = ["has_compiled_ops", "segment_mean_", "transfer_rows_"]
