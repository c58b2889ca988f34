"""Loads the compiled kernels, or registers pure-torch ones in their place.

Either way the ops exist as ``torch.ops.vocabxfer.*`` with one schema, so the
rest of the package never asks which implementation runs.
"""

import logging
import warnings

import torch

from . import _reference

logger = logging.getLogger(__name__)

SCHEMAS = {
    "transfer_rows_": "transfer_rows_(Tensor(a!) target, Tensor target_index, "
                      "Tensor source, Tensor source_index) -> ()",
    "segment_mean_": "segment_mean_(Tensor(a!) target, Tensor target_index, "
                     "Tensor source, Tensor source_index, Tensor offsets, "
                     "Tensor? weights) -> ()",
}


def _load_compiled() -> "tuple[bool, str]":
    try:
        from . import _C  # noqa: F401  (importing runs the registrations)
    except ImportError as error:
        return False, str(error)
    return True, ""


def _register_fallback() -> torch.library.Library:
    library = torch.library.Library("vocabxfer", "DEF")
    for schema in SCHEMAS.values():
        library.define(schema)
    library.impl("transfer_rows_", _reference.transfer_rows_,
                 "CompositeExplicitAutograd")
    library.impl("segment_mean_", _reference.segment_mean_,
                 "CompositeExplicitAutograd")
    return library


COMPILED, LOAD_ERROR = _load_compiled()
if not COMPILED:
    # Kept referenced: the registrations live as long as this object.
    _FALLBACK_LIBRARY = _register_fallback()
    warnings.warn(
        "vocabxfer: the compiled kernels could not be loaded "
        f"({LOAD_ERROR}); using the pure-torch implementation, which gives "
        "the same results more slowly. Reinstall with "
        "`pip install --no-build-isolation .` against the torch you run.",
        RuntimeWarning, stacklevel=2)
    logger.debug("vocabxfer._C failed to load: %s", LOAD_ERROR)


@torch.library.register_fake("vocabxfer::transfer_rows_")
def _transfer_rows_fake(target, target_index, source, source_index):
    _reference.check_transfer_rows_args(target, target_index, source, source_index)


@torch.library.register_fake("vocabxfer::segment_mean_")
def _segment_mean_fake(target, target_index, source, source_index, offsets, weights):
    _reference.check_segment_mean_args(
        target, target_index, source, source_index, offsets, weights)
