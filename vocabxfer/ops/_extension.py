"""Defines the ops and gives them kernels: the compiled ones from
vocabxfer._C, or pure-torch ones in their place.

The schemas below are the only definition of the ops: vocabxfer._C registers
kernels for them (TORCH_LIBRARY_IMPL) and nothing else. Either way the ops
exist as ``torch.ops.vocabxfer.*``, so the rest of the package never asks
which implementation runs.
"""

import logging
import warnings

import torch

from vocabxfer.ops import fallback as _fallback

from vocabxfer.ops import checks as _op_checks

logger = logging.getLogger(__name__)

SCHEMAS = {
    # target[target_index[i]] = source[source_index[i]] for every i,
    # converting dtype on the way.
    # indices_checked: the caller built and checked the indices (a token
    # map's own), so no value check runs; see ops.transfer_rows_.
    "transfer_rows_": "transfer_rows_(Tensor(a!) target, Tensor target_index, "
                      "Tensor source, Tensor source_index, bool indices_checked=False) -> ()",
    # target[target_index[s]] = (weighted) mean of
    # source[source_index[offsets[s] : offsets[s + 1]]] for every segment s.
    "segment_mean_": "segment_mean_(Tensor(a!) target, Tensor target_index, "
                     "Tensor source, Tensor source_index, Tensor offsets, "
                     "Tensor? weights, bool indices_checked=False) -> ()",
}

# Kept referenced: the definitions live as long as this object.
_LIBRARY = torch.library.Library("vocabxfer", "DEF")
for _schema in SCHEMAS.values():
    _LIBRARY.define(_schema)


def _load_compiled() -> "tuple[bool, str]":
    try:
        from vocabxfer import _C  # noqa: F401  (importing runs the kernel registrations)
    except ImportError as error:
        return False, str(error)
    return True, ""


COMPILED, LOAD_ERROR = _load_compiled()
if not COMPILED:
    _LIBRARY.impl("transfer_rows_", _fallback.transfer_rows_, "CompositeExplicitAutograd")
    _LIBRARY.impl("segment_mean_", _fallback.segment_mean_, "CompositeExplicitAutograd")
    warnings.warn(
        "vocabxfer: the compiled kernels could not be loaded "
        f"({LOAD_ERROR}); using the pure-torch implementation, which gives "
        "the same results more slowly. Reinstall with "
        "`pip install --no-build-isolation .` against the torch you run, and run "
        "`vocabxfer doctor` to check the install.",
        RuntimeWarning, stacklevel=2)
    logger.debug("vocabxfer._C failed to load: %s", LOAD_ERROR)


@torch.library.register_fake("vocabxfer::transfer_rows_")
def _transfer_rows_fake(target, target_index, source, source_index, indices_checked=False):
    _op_checks.check_transfer_rows_args(target, target_index, source, source_index)


@torch.library.register_fake("vocabxfer::segment_mean_")
def _segment_mean_fake(target, target_index, source, source_index, offsets, weights,
                       indices_checked=False):
    _op_checks.check_segment_mean_args(
        target, target_index, source, source_index, offsets, weights)
