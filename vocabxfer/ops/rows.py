"""The row operations that everything else is built on."""

from typing import Optional, Sequence, Union

import torch

from vocabxfer.ops import _extension

IndexLike = Union[torch.Tensor, Sequence[int]]
INT64_MAX = 2 ** 63 - 1
UNSIGNED_WIDE = tuple(getattr(torch, name) for name in ("uint64", "uint32")
                      if hasattr(torch, name))


def has_compiled_ops() -> bool:
    """True when the compiled C++/CUDA kernels are in use, False when the
    pure-torch fallback runs in their place (the import warned why)."""
    return _extension.COMPILED


def _check_tensor(op: str, name: str, value: object) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def _index_device(target: torch.Tensor, *arguments) -> torch.device:
    """Where a call's list indices go: the device of the first argument that
    is a tensor (weights included), else the CPU. A list has no device of
    its own and joins the tensors, so that ``offsets=[0, 2, 3]`` next to GPU
    indices is not refused as a second device; it joins only the CPU or the
    target's device, so that a tensor elsewhere (the meta device) is named
    by the check as itself, not as the list beside it."""
    for argument in arguments:
        if isinstance(argument, torch.Tensor):
            if argument.device in (torch.device("cpu"), target.device):
                return argument.device
            break
    return torch.device("cpu")


def _as_index(op: str, name: str, index: IndexLike,
              device: Optional[torch.device] = None) -> torch.Tensor:
    """A tensor as it is (the op checks its dtype and device); anything else
    (a list, a tuple, a numpy array) becomes a tensor on `device` (the CPU
    by default, the host path) and must hold integers, never floats or
    bools, which a cast would silently truncate."""
    if isinstance(index, torch.Tensor):
        return index
    if isinstance(index, (str, bytes)):
        raise TypeError(f"{op}: {name} must be a 1-D tensor or sequence of ints, got a "
                        f"{type(index).__name__}")
    if isinstance(index, (list, tuple)):
        # torch.as_tensor([1, True]) gives int64 [1, 1]: a bool would pass as 1.
        for position, value in enumerate(index):
            if isinstance(value, bool) or (type(value).__module__ == "numpy" and
                                           type(value).__name__ in ("bool", "bool_")):
                if all(isinstance(other, bool) or type(other) is type(value)
                       for other in index):
                    break  # all bools: refused below, as a bool tensor
                raise TypeError(f"{op}: {name}[{position}] is the bool {value!r}; indices "
                                "must be integers (bools are refused, never read as 0 or 1)")
    try:
        tensor = torch.as_tensor(index)
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise TypeError(f"{op}: {name} must be a 1-D tensor or sequence of ints that fit in "
                        f"int64; could not read it ({error})") from None
    if tensor.numel() == 0:
        tensor = tensor.to(torch.int64)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"{op}: {name} must hold integers, got values of type "
                        f"{str(tensor.dtype).replace('torch.', '')}; convert them explicitly")
    if tensor.dtype in UNSIGNED_WIDE and tensor.numel():
        # Cast to int64, 2**64 - 1 would read as -1 and be named so; torch
        # has no comparisons for uint64, so the values are read as Python ints.
        for position, value in enumerate(tensor.reshape(-1).tolist()):
            if value > INT64_MAX:
                raise IndexError(f"{op}: {name}[{position}] = {value} does not fit in int64, "
                                 "so it is no row of any tensor")
    return tensor.to(dtype=torch.int64, device=device)


def _mark_modified(target: torch.Tensor) -> None:
    # Custom ops get no version-counter bump from autograd; without it a
    # tensor saved for backward and then overwritten here would go unnoticed.
    torch.autograd.graph.increment_version(target)


def transfer_rows_(target: torch.Tensor, target_index: IndexLike,
                   source: torch.Tensor, source_index: IndexLike, *,
                   indices_checked: bool = False) -> torch.Tensor:
    """Write ``source[source_index[i]]`` into ``target[target_index[i]]`` for
    every ``i`` in one fused pass, converting dtype exactly as
    ``source[source_index].to(target.dtype)`` does, NaN payloads included,
    and return ``target``.

    ``target`` and ``source`` are 2-D float64/float32/float16/bfloat16 tensors
    of equal row width on one device; either may be strided (a slice or a
    transposed view), but ``target``'s elements must be distinct (no expanded
    or overlapping as_strided view) and must not share memory with
    ``source``. The indices are 1-D int64 or int32 tensors (or sequences of
    ints) of equal length; each target row may appear once. ``target`` may be
    a leaf that requires grad, such as an ``nn.Embedding`` weight: the write
    is an initialisation and is not recorded by autograd. An inference
    tensor can be written only inside ``torch.inference_mode()``.

    On a GPU the indices may be on the CPU or on the target's device (both
    on one; a list joins the other index's device). Indices on the CPU, the
    common case, reach the GPU by one asynchronous copy from pinned memory
    and are checked on the host while the copy runs, before the kernel is
    enqueued: the call returns without waiting for the device, as
    ``index_copy_`` does. Indices on the GPU are checked there, and the
    call synchronises once to report a bad one. ``indices_checked=True``
    is the caller's promise that it built the indices and checked them
    against these tensors (ranges, repeats): no check of their values runs,
    on any device. A false promise writes out of bounds; vocabxfer passes
    it only for indices its own plans built and validated.

    Raises TypeError for a wrong type or dtype, IndexError for an index out
    of range and ValueError for every other bad argument, before any row is
    written.
    """
    op = "transfer_rows_"
    _check_tensor(op, "target", target)
    _check_tensor(op, "source", source)
    device = _index_device(target, target_index, source_index)
    target_index = _as_index(op, "target_index", target_index, device)
    source_index = _as_index(op, "source_index", source_index, device)
    with torch.no_grad():
        torch.ops.vocabxfer.transfer_rows_.default(target, target_index, source, source_index,
                                                   bool(indices_checked))
    _mark_modified(target)
    return target


def segment_mean_(target: torch.Tensor, target_index: IndexLike, source: torch.Tensor,
                  source_index: IndexLike, offsets: IndexLike,
                  weights: Optional[torch.Tensor] = None, *,
                  indices_checked: bool = False) -> torch.Tensor:
    """For every segment ``s``, write the mean of the source rows
    ``source_index[offsets[s]:offsets[s + 1]]`` into ``target[target_index[s]]``
    and return ``target``.

    ``offsets`` (CSR form) starts at 0, grows strictly (no empty segment) and
    ends at ``len(source_index)``. With ``weights`` (one per source_index
    entry, finite and > 0) the mean is weighted. Each row is scaled by its
    share of the segment's weight (computed in float64) before the sum, which
    runs in float32 (float64 for a float64 source), so neither huge weights
    nor huge values overflow it (weights are read as float64, and weights
    whose sum overflows float64 are first divided by their segment's
    largest); the result is converted to ``target``'s
    dtype at the end. Source ids may repeat; target ids may not. The
    indices, offsets and weights are on the CPU or on the target's device
    (all on one; a list joins the tensors' device), with the paths and
    ``indices_checked`` of ``transfer_rows_``. Raises as ``transfer_rows_``.
    """
    op = "segment_mean_"
    _check_tensor(op, "target", target)
    _check_tensor(op, "source", source)
    if weights is not None:
        _check_tensor(op, "weights", weights)
    device = _index_device(target, target_index, source_index, offsets, weights)
    target_index = _as_index(op, "target_index", target_index, device)
    source_index = _as_index(op, "source_index", source_index, device)
    offsets = _as_index(op, "offsets", offsets, device)
    with torch.no_grad():
        torch.ops.vocabxfer.segment_mean_.default(
            target, target_index, source, source_index, offsets, weights, bool(indices_checked))
    _mark_modified(target)
    return target
