"""Pure-torch kernels of the ops, registered when vocabxfer._C cannot be
loaded. They run every check of the compiled kernels, with the same
messages, before they write anything."""

from typing import Optional

import torch

from vocabxfer.ops import checks


def transfer_rows_(target: torch.Tensor, target_index: torch.Tensor,
                   source: torch.Tensor, source_index: torch.Tensor,
                   indices_checked: bool = False) -> None:
    op = "transfer_rows_"
    checks.check_transfer_rows_args(target, target_index, source, source_index)
    checks.check_memory(op, target, source)
    if not indices_checked:
        checks.check_transfer_rows_values(target_index, source_index, target.shape[0],
                                          source.shape[0])
    if target_index.numel() == 0:
        return
    target_index, source_index = target_index.to(target.device), source_index.to(target.device)
    rows = source.index_select(0, source_index.long()).to(target.dtype)
    target.index_copy_(0, target_index.long(), rows)


def accumulation_dtype(source: torch.Tensor) -> torch.dtype:
    return torch.float64 if source.dtype == torch.float64 else torch.float32


def segment_mean_(target: torch.Tensor, target_index: torch.Tensor, source: torch.Tensor,
                  source_index: torch.Tensor, offsets: torch.Tensor,
                  weights: Optional[torch.Tensor], indices_checked: bool = False) -> None:
    op = "segment_mean_"
    checks.check_segment_mean_args(target, target_index, source, source_index, offsets, weights)
    checks.check_memory(op, target, source)
    acc_dtype = accumulation_dtype(source)
    # float64 whatever the source, as the kernels read them: float32 would
    # turn a valid 1e308 into inf before the check.
    acc_weights = None if weights is None else weights.double()
    if not indices_checked:
        checks.check_segment_mean_values(target_index, source_index, offsets, acc_weights,
                                         target.shape[0], source.shape[0])
    segments = target_index.numel()
    if segments == 0:
        return
    target_index, source_index, offsets = (tensor.to(source.device) for tensor in
                                           (target_index, source_index, offsets))
    acc_weights = None if acc_weights is None else acc_weights.to(source.device)
    device = source.device
    segment_of_piece = torch.repeat_interleave(torch.arange(segments, device=device),
                                               offsets.long().diff())
    # Each piece's share of its segment's weight, in float64, as the kernels
    # compute it: scaling before summing cannot overflow.
    piece_weights = (torch.ones(source_index.numel(), dtype=torch.float64, device=device)
                     if acc_weights is None else acc_weights.double())
    totals = torch.zeros(segments, dtype=torch.float64, device=device)
    totals.index_add_(0, segment_of_piece, piece_weights)
    overflowed = ~torch.isfinite(totals)
    if bool(overflowed.any()):  # weights near 1e308: divided by the segment's largest
        largest = torch.zeros(segments, dtype=torch.float64, device=device).scatter_reduce_(
            0, segment_of_piece, piece_weights, "amax")
        divisor = torch.where(overflowed, largest, torch.ones_like(largest))
        piece_weights = piece_weights / divisor[segment_of_piece]
        totals = torch.zeros(segments, dtype=torch.float64, device=device).index_add_(
            0, segment_of_piece, piece_weights)
    shares = (piece_weights / totals[segment_of_piece]).to(acc_dtype)
    rows = source.index_select(0, source_index.long()).to(acc_dtype) * shares[:, None]
    sums = torch.zeros(segments, source.shape[1], dtype=acc_dtype, device=device)
    sums.index_add_(0, segment_of_piece, rows)
    target.index_copy_(0, target_index.long(), sums.to(target.dtype))
