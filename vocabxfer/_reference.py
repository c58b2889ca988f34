"""Pure-torch implementations of the ops, with the same checks and messages
as the compiled kernels. They run when vocabxfer._C cannot be loaded, and
their metadata checks serve the fake kernels used by torch.compile.
"""

from typing import Optional

import torch

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int64, torch.int32)


def _dtype_name(dtype: torch.dtype) -> str:
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
                        f"got {_dtype_name(matrix.dtype)}")
    if matrix.dim() != 2:
        raise ValueError(f"{op}: {name} must be 2-D (rows x width), got "
                         f"{matrix.dim()}-D with shape {_shape(matrix)}")


def _check_device(op: str, name: str, tensor: torch.Tensor, target: torch.Tensor) -> None:
    if tensor.device != target.device:
        raise ValueError(f"{op}: {name} is on {tensor.device} but target is on "
                         f"{target.device}; all tensors must be on one device")


def _check_index(op: str, name: str, index: torch.Tensor, target: torch.Tensor) -> None:
    if index.dtype not in INDEX_DTYPES:
        raise TypeError(f"{op}: {name} must be int64 or int32, got {_dtype_name(index.dtype)}")
    if index.dim() != 1:
        raise ValueError(f"{op}: {name} must be 1-D, got {index.dim()}-D with shape "
                         f"{_shape(index)}")
    _check_device(op, name, index, target)


def _shares_memory(target: torch.Tensor, source: torch.Tensor) -> bool:
    if target.untyped_storage().data_ptr() != source.untyped_storage().data_ptr():
        return False
    if target.numel() == 0 or source.numel() == 0:
        return False
    # Same storage: refuse when the byte ranges the two views span intersect.
    def span(tensor: torch.Tensor) -> "tuple[int, int]":
        start = tensor.data_ptr()
        extent = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
        return start, start + (extent + 1) * tensor.element_size()
    target_start, target_end = span(target)
    source_start, source_end = span(source)
    return target_start < source_end and source_start < target_end


def _check_no_overlap(op: str, target: torch.Tensor, source: torch.Tensor) -> None:
    if target.numel() > 1 and any(stride == 0 and size > 1
                                  for size, stride in zip(target.shape, target.stride())):
        raise ValueError(f"{op}: target has elements that share memory (an expanded or "
                         "stride-0 view); pass a tensor whose elements are distinct, e.g. "
                         "target.clone()")
    if _shares_memory(target, source):
        raise ValueError(f"{op}: target and source share memory, so rows could be "
                         "overwritten before they are read; pass source.clone() instead")


def check_transfer_rows_args(target, target_index, source, source_index) -> None:
    """The checks of transfer_rows_ that need no look at index values."""
    op = "transfer_rows_"
    _check_matrix(op, "target", target)
    _check_matrix(op, "source", source)
    _check_device(op, "source", source, target)
    _check_index(op, "target_index", target_index, target)
    _check_index(op, "source_index", source_index, target)
    if target_index.numel() != source_index.numel():
        raise ValueError(f"{op}: target_index has {target_index.numel()} entries but "
                         f"source_index has {source_index.numel()}; they are pairs and "
                         "must have equal length")
    if target.shape[1] != source.shape[1]:
        raise ValueError(f"{op}: target rows have width {target.shape[1]} but source rows "
                         f"have width {source.shape[1]}; rows must have the same width")
    if not isinstance(target, torch._subclasses.FakeTensor):
        _check_no_overlap(op, target, source)


def check_segment_mean_args(target, target_index, source, source_index, offsets,
                            weights) -> None:
    """The checks of segment_mean_ that need no look at index values."""
    op = "segment_mean_"
    _check_matrix(op, "target", target)
    _check_matrix(op, "source", source)
    _check_device(op, "source", source, target)
    _check_index(op, "target_index", target_index, target)
    _check_index(op, "source_index", source_index, target)
    _check_index(op, "offsets", offsets, target)
    if offsets.numel() != target_index.numel() + 1:
        raise ValueError(f"{op}: offsets has {offsets.numel()} entries but target_index has "
                         f"{target_index.numel()}; offsets must have one entry per segment "
                         "plus one")
    if target.shape[1] != source.shape[1]:
        raise ValueError(f"{op}: target rows have width {target.shape[1]} but source rows "
                         f"have width {source.shape[1]}; rows must have the same width")
    if weights is not None:
        if weights.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: weights must be a floating tensor, got "
                            f"{_dtype_name(weights.dtype)}")
        if weights.dim() != 1 or weights.numel() != source_index.numel():
            raise ValueError(f"{op}: weights must be 1-D with one weight per source_index "
                             f"entry ({source_index.numel()}), got shape {_shape(weights)}")
        _check_device(op, "weights", weights, target)
    if not isinstance(target, torch._subclasses.FakeTensor):
        _check_no_overlap(op, target, source)


def _check_range(op: str, name: str, index: torch.Tensor, rows: int, rows_of: str) -> None:
    bad = ((index < 0) | (index >= rows)).nonzero()
    if bad.numel():
        position = int(bad[0, 0])
        raise IndexError(f"{op}: {name}[{position}] = {int(index[position])} is out of "
                         f"range for {rows_of} with {rows} rows")


def _check_unique(op: str, name: str, index: torch.Tensor) -> None:
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


def transfer_rows_(target: torch.Tensor, target_index: torch.Tensor,
                   source: torch.Tensor, source_index: torch.Tensor) -> None:
    op = "transfer_rows_"
    check_transfer_rows_args(target, target_index, source, source_index)
    _check_range(op, "target_index", target_index, target.shape[0], "target")
    _check_range(op, "source_index", source_index, source.shape[0], "source")
    _check_unique(op, "target_index", target_index)
    if target_index.numel() == 0:
        return
    rows = source.index_select(0, source_index.long()).to(target.dtype)
    target.index_copy_(0, target_index.long(), rows)


def segment_mean_(target: torch.Tensor, target_index: torch.Tensor, source: torch.Tensor,
                  source_index: torch.Tensor, offsets: torch.Tensor,
                  weights: Optional[torch.Tensor]) -> None:
    op = "segment_mean_"
    check_segment_mean_args(target, target_index, source, source_index, offsets, weights)
    segments = target_index.numel()
    pieces = source_index.numel()
    bounds = offsets.long().tolist()
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
    _check_range(op, "target_index", target_index, target.shape[0], "target")
    _check_unique(op, "target_index", target_index)
    _check_range(op, "source_index", source_index, source.shape[0], "source")
    acc_dtype = torch.float64 if source.dtype == torch.float64 else torch.float32
    if weights is not None:
        acc_weights = weights.to(acc_dtype)
        bad = (~(torch.isfinite(acc_weights) & (acc_weights > 0))).nonzero()
        if bad.numel():
            position = int(bad[0, 0])
            raise ValueError(f"{op}: weights[{position}] = {float(acc_weights[position]):g} "
                             "but weights must be finite and greater than 0")
    else:
        acc_weights = torch.ones(pieces, dtype=acc_dtype, device=source.device)
    if segments == 0:
        return
    segment_of_piece = torch.repeat_interleave(
        torch.arange(segments, device=source.device),
        offsets.long().diff())
    rows = source.index_select(0, source_index.long()).to(acc_dtype) * acc_weights[:, None]
    sums = torch.zeros(segments, source.shape[1], dtype=acc_dtype, device=source.device)
    sums.index_add_(0, segment_of_piece, rows)
    totals = torch.zeros(segments, dtype=acc_dtype, device=source.device)
    totals.index_add_(0, segment_of_piece, acc_weights)
    target.index_copy_(0, target_index.long(), (sums / totals[:, None]).to(target.dtype))
