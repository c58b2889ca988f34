"""The ops' argument checks in pure torch, with the compiled kernels'
messages. The fake kernels (torch.compile, meta tensors) run the metadata
checks; the fallback kernels run all of them."""

from typing import Optional

import torch

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int64, torch.int32)


def dtype_name(dtype: torch.dtype) -> str:
    # The C++ kernels print c10 names (Float, Long, ...); match them.
    return {torch.float64: "Double", torch.float32: "Float", torch.float16: "Half",
            torch.bfloat16: "BFloat16", torch.int64: "Long", torch.int32: "Int",
            torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte",
            torch.bool: "Bool"}.get(dtype, str(dtype))


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(str(size) for size in tensor.shape) + "]"


def _check_matrix(op: str, name: str, matrix: torch.Tensor) -> None:
    if matrix.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float64, float32, float16 or bfloat16, "
                        f"got {dtype_name(matrix.dtype)}")
    if matrix.dim() != 2:
        raise ValueError(f"{op}: {name} must be 2-D (rows x width), got "
                         f"{matrix.dim()}-D with shape {_shape(matrix)}")


def _check_device(op: str, name: str, tensor: torch.Tensor, target: torch.Tensor) -> None:
    if tensor.device != target.device:
        raise ValueError(f"{op}: {name} is on {tensor.device} but target is on "
                         f"{target.device}; all tensors must be on one device")


def _check_index(op: str, name: str, index: torch.Tensor, target: torch.Tensor) -> None:
    """A 1-D int index on the target's device or on the CPU (a GPU target
    then reads it through one asynchronous copy)."""
    if index.dtype not in INDEX_DTYPES:
        raise TypeError(f"{op}: {name} must be int64 or int32, got {dtype_name(index.dtype)}")
    if index.dim() != 1:
        raise ValueError(f"{op}: {name} must be 1-D, got {index.dim()}-D with shape "
                         f"{_shape(index)}")
    if index.device != target.device and index.device.type != "cpu":
        raise ValueError(f"{op}: {name} is on {index.device} but target is on "
                         f"{target.device}; indices must be on the target's device or on "
                         "the CPU")


def _check_same_index_device(op: str, first_name: str, first: torch.Tensor, name: str,
                             index: torch.Tensor) -> None:
    if index.device != first.device:
        raise ValueError(f"{op}: {first_name} is on {first.device} but {name} is on "
                         f"{index.device}; pass every index on one device (the CPU, or the "
                         "target's)")


def may_have_internal_overlap(tensor: torch.Tensor) -> bool:
    """Whether two elements may share memory: sorted by stride, every
    dimension must step past everything the smaller ones span (refuses
    expanded views and as_strided views whose rows overlap)."""
    if tensor.numel() == 0:
        return False
    extent = 0
    for stride, size in sorted((stride, size) for size, stride
                               in zip(tensor.shape, tensor.stride()) if size > 1):
        if stride <= extent:
            return True
        extent += (size - 1) * stride
    return False


def _check_target_layout(op: str, target: torch.Tensor) -> None:
    if may_have_internal_overlap(target):
        raise ValueError(f"{op}: target has elements that share memory (an expanded or "
                         "stride-0 view, or an as_strided view whose rows overlap); pass a "
                         "tensor whose elements are distinct, e.g. target.clone()")


def _byte_span(tensor: torch.Tensor) -> "tuple[int, int]":
    start = tensor.data_ptr()
    extent = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    return start, start + (extent + 1) * tensor.element_size()


def check_memory(op: str, target: torch.Tensor, source: torch.Tensor) -> None:
    """Checks that need real memory: the target can be written here, and
    shares no bytes with the source (decided by address, not by Storage:
    two Storages can hold the same memory)."""
    if target.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError(f"{op}: target is an inference tensor (made under "
                         "torch.inference_mode()) and cannot be written outside inference "
                         "mode; call the op inside torch.inference_mode(), or pass a tensor "
                         "made outside it (target.clone())")
    if target.numel() == 0 or source.numel() == 0:
        return
    target_start, target_end = _byte_span(target)
    source_start, source_end = _byte_span(source)
    if target_start < source_end and source_start < target_end:
        raise ValueError(f"{op}: target and source share memory, so rows could be "
                         "overwritten before they are read; pass source.clone() instead")


def _check_rows(op: str, target, target_index, source, source_index) -> None:
    """What both ops check first: two float matrices and two indices on one
    device."""
    _check_matrix(op, "target", target)
    _check_matrix(op, "source", source)
    _check_device(op, "source", source, target)
    _check_index(op, "target_index", target_index, target)
    _check_index(op, "source_index", source_index, target)
    _check_same_index_device(op, "target_index", target_index, "source_index", source_index)


def _check_width(op: str, target, source) -> None:
    if target.shape[1] != source.shape[1]:
        raise ValueError(f"{op}: target rows have width {target.shape[1]} but source rows "
                         f"have width {source.shape[1]}; rows must have the same width")


def check_transfer_rows_args(target, target_index, source, source_index) -> None:
    """The checks of transfer_rows_ that need neither memory nor index values."""
    op = "transfer_rows_"
    _check_rows(op, target, target_index, source, source_index)
    if target_index.numel() != source_index.numel():
        raise ValueError(f"{op}: target_index has {target_index.numel()} entries but "
                         f"source_index has {source_index.numel()}; they are pairs and "
                         "must have equal length")
    _check_width(op, target, source)
    _check_target_layout(op, target)


def check_segment_mean_args(target, target_index, source, source_index, offsets,
                            weights) -> None:
    """The checks of segment_mean_ that need neither memory nor index values."""
    op = "segment_mean_"
    _check_rows(op, target, target_index, source, source_index)
    _check_index(op, "offsets", offsets, target)
    _check_same_index_device(op, "target_index", target_index, "offsets", offsets)
    if offsets.numel() != target_index.numel() + 1:
        raise ValueError(f"{op}: offsets has {offsets.numel()} entries but target_index has "
                         f"{target_index.numel()}; offsets must have one entry per segment "
                         "plus one")
    _check_width(op, target, source)
    if weights is not None:
        if weights.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: weights must be a floating tensor, got "
                            f"{dtype_name(weights.dtype)}")
        if weights.dim() != 1 or weights.numel() != source_index.numel():
            raise ValueError(f"{op}: weights must be 1-D with one weight per source_index "
                             f"entry ({source_index.numel()}), got shape {_shape(weights)}")
        if weights.device != target_index.device:
            raise ValueError(f"{op}: weights are on {weights.device} but the indices on "
                             f"{target_index.device}; pass the weights where the indices are")
    _check_target_layout(op, target)


def check_range(op: str, name: str, index: torch.Tensor, rows: int, rows_of: str) -> None:
    bad = ((index < 0) | (index >= rows)).nonzero()
    if bad.numel():
        position = int(bad[0, 0])
        raise IndexError(f"{op}: {name}[{position}] = {int(index[position])} is out of "
                         f"range for {rows_of} with {rows} rows")


def check_unique(op: str, name: str, index: torch.Tensor) -> None:
    values, counts = torch.unique(index, return_counts=True)
    if bool((counts > 1).any()):
        # Report the repeat that comes first in the index, as the kernels do.
        repeated = set(values[counts > 1].tolist())
        seen = {}
        for position, value in enumerate(index.tolist()):
            if value in repeated:
                if value in seen:
                    raise ValueError(f"{op}: {name} holds row {value} twice (positions "
                                     f"{seen[value]} and {position}); each target row may "
                                     "be written once, so the token map has a duplicate")
                seen[value] = position


def check_offsets(op: str, offsets: torch.Tensor, pieces: int) -> None:
    bounds = offsets.long().tolist()
    segments = len(bounds) - 1
    if bounds[0] != 0:
        raise ValueError(f"{op}: offsets[0] = {bounds[0]} but must be 0")
    if bounds[segments] != pieces:
        raise ValueError(f"{op}: offsets[{segments}] = {bounds[segments]} but must equal the "
                         f"length of source_index ({pieces})")
    for s in range(segments):
        if bounds[s + 1] <= bounds[s]:
            raise ValueError(f"{op}: segment {s} is empty or reversed (offsets[{s}] = "
                             f"{bounds[s]}, offsets[{s + 1}] = {bounds[s + 1]}); every "
                             "segment needs at least one source row")


def check_weights(op: str, weights: Optional[torch.Tensor]) -> None:
    if weights is None:
        return
    bad = (~(torch.isfinite(weights) & (weights > 0))).nonzero()
    if bad.numel():
        position = int(bad[0, 0])
        raise ValueError(f"{op}: weights[{position}] = {float(weights[position]):g} but "
                         "weights must be finite and greater than 0")


def check_transfer_rows_values(target_index: torch.Tensor, source_index: torch.Tensor,
                               target_rows: int, source_rows: int) -> None:
    """transfer_rows_'s index values, in the compiled kernels' order: both
    ranges, then each target row at most once."""
    op = "transfer_rows_"
    check_range(op, "target_index", target_index, target_rows, "target")
    check_range(op, "source_index", source_index, source_rows, "source")
    check_unique(op, "target_index", target_index)


def check_segment_mean_values(target_index: torch.Tensor, source_index: torch.Tensor,
                              offsets: torch.Tensor, weights: Optional[torch.Tensor],
                              target_rows: int, source_rows: int) -> None:
    """segment_mean_'s values, in the compiled kernels' order: offsets,
    target range and repeats, source range, weights."""
    op = "segment_mean_"
    check_offsets(op, offsets, source_index.numel())
    check_range(op, "target_index", target_index, target_rows, "target")
    check_unique(op, "target_index", target_index)
    check_range(op, "source_index", source_index, source_rows, "source")
    check_weights(op, weights)
