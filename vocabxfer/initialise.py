"""From a token map to a new embedding matrix: matched rows are copied, the
others start from what the source model knows."""

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import torch

from . import families, fvt
from .matching import TokenMap
from .ops import segment_mean_, transfer_rows_

INITS = ("fvt", "mean", "normal", "random")

# How each target row was initialised, as counted in the report.
MATCHED = "matched"
SPECIAL_ROLE = "special by role"
FVT = "fvt"
MEAN = "mean"
MEAN_FALLBACK = "mean (no known pieces)"
NORMAL = "normal"
RANDOM = "random"
PADDING = "padding rows"


@dataclass
class InitPlan:
    """Which rule fills each target row, decided once from the token map and
    applied to every vocabulary-sized tensor of a model."""

    token_map: TokenMap
    target_size: int
    init: str
    copy_target_ids: torch.Tensor
    copy_source_ids: torch.Tensor
    segments: Optional[fvt.Segments]
    mean_ids: torch.Tensor
    sampled_ids: torch.Tensor
    counts: Dict[str, int] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [f"{rule} {count:,}" for rule, count in self.counts.items() if count]
        return f"initialised {self.target_size:,} rows ({self.init}): " + ", ".join(parts)


def plan_initialisation(token_map: TokenMap, target_size: Optional[int] = None,
                        init: str = "fvt") -> InitPlan:
    """Decide the rule of every target row.

    Matched tokens copy their source row. Unmatched special tokens copy the
    source's special token of the same role (``[CLS]`` from ``<s>``, ...)
    where it has one. The rest follow ``init``: ``"fvt"`` averages the
    source rows of the pieces the source tokenizer splits the token into
    (the mean row where no piece is known); ``"mean"`` takes the mean source
    row; ``"normal"`` samples N(mean, std) per dimension of the source rows;
    ``"random"`` samples N(0, 1), as a fresh ``nn.Embedding`` does (only to
    reproduce the common recipe). Rows beyond the target vocabulary (padding
    to a multiple of 8, say) take the mean.

    Raises ValueError for an unknown init or a target_size smaller than the
    target vocabulary.
    """
    if init not in INITS:
        raise ValueError(f"init {init!r} is not one of {', '.join(INITS)}")
    vocab_size = len(token_map.target)
    target_size = vocab_size if target_size is None else int(target_size)
    if target_size < vocab_size:
        raise ValueError(f"target_size {target_size} is smaller than the target vocabulary "
                         f"({vocab_size} tokens)")
    started = time.perf_counter()
    source, target = token_map.source, token_map.target
    copy_target = token_map.target_ids.tolist()
    copy_source = token_map.source_ids.tolist()
    counts = {MATCHED: len(copy_target)}

    # Specials the map left out take the source's special of the same role.
    remaining: List[int] = []
    roles_found = 0
    for target_id in token_map.unmatched_target_ids.tolist():
        role = target.role_of(target.tokens[target_id])
        source_token = None
        if role is not None:
            source_token = source.specials.get(role) or source.specials.get(
                families.ROLE_STAND_INS.get(role, ""))
        if source_token is not None and source_token in source.ids:
            copy_target.append(target_id)
            copy_source.append(source.ids[source_token])
            roles_found += 1
        else:
            remaining.append(target_id)
    counts[SPECIAL_ROLE] = roles_found

    segments = None
    mean_ids: List[int] = []
    sampled: List[int] = []
    if init == "fvt":
        segments = fvt.split_tokens(source, target, remaining)
        counts[FVT] = len(segments.target_ids)
        counts[MEAN_FALLBACK] = len(segments.unsplittable)
        mean_ids = list(segments.unsplittable)
    elif init == "mean":
        mean_ids = remaining
        counts[MEAN] = len(remaining)
    else:
        sampled = remaining
        counts[NORMAL if init == "normal" else RANDOM] = len(remaining)
    padding = list(range(vocab_size, target_size))
    mean_ids += padding
    counts[PADDING] = len(padding)

    as_ids = lambda ids: torch.tensor(ids, dtype=torch.int64)  # noqa: E731
    return InitPlan(token_map=token_map, target_size=target_size, init=init,
                    copy_target_ids=as_ids(copy_target), copy_source_ids=as_ids(copy_source),
                    segments=segments, mean_ids=as_ids(mean_ids), sampled_ids=as_ids(sampled),
                    counts=counts, seconds={"plan": time.perf_counter() - started})


def apply_plan(plan: InitPlan, source_rows: torch.Tensor, *, dtype: Optional[torch.dtype] = None,
               device: Union[str, torch.device, None] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A new (target_size, width) matrix, or a (target_size,) vector for a
    1-D source such as an output bias, filled by the plan from `source_rows`.
    Sampled rules give a bias zeros, as a freshly built model does."""
    started = time.perf_counter()
    vector = source_rows.dim() == 1
    source = source_rows.detach()
    source = source[:, None] if vector else source
    source_vocab = len(plan.token_map.source)
    if source.dim() != 2 or source.shape[0] < source_vocab:
        raise ValueError(f"the source tensor has shape {tuple(source_rows.shape)}, but the source "
                         f"vocabulary has {source_vocab} tokens; expected at least that many rows")
    device = torch.device(device) if device is not None else source.device
    source = source.to(device)
    dtype = dtype or source.dtype
    target = torch.empty(plan.target_size, source.shape[1], dtype=dtype, device=device)

    on = lambda ids: ids.to(device)  # noqa: E731
    transfer_rows_(target, on(plan.copy_target_ids), source, on(plan.copy_source_ids))
    if plan.segments is not None and plan.segments.target_ids:
        segment_mean_(target, on(torch.tensor(plan.segments.target_ids)), source,
                      on(torch.tensor(plan.segments.source_ids)),
                      on(torch.tensor(plan.segments.offsets)))
    vocab_rows = source[:source_vocab]
    sum_dtype = torch.float64 if source.dtype == torch.float64 else torch.float32
    if plan.mean_ids.numel():
        # Reduced in float32 on the fly: no float copy of the whole matrix.
        target[on(plan.mean_ids)] = vocab_rows.mean(0, dtype=sum_dtype).to(dtype)
    if plan.sampled_ids.numel():
        count, width = plan.sampled_ids.numel(), source.shape[1]
        if vector:
            samples = torch.zeros(count, width)
        else:
            samples = torch.randn(count, width, generator=generator)
            if plan.init == "normal":
                std, mean = torch.std_mean(vocab_rows.to(sum_dtype).cpu(), dim=0)
                samples = samples * std + mean
        target[on(plan.sampled_ids)] = samples.to(device=device, dtype=dtype)
    plan.seconds["apply"] = plan.seconds.get("apply", 0.0) + time.perf_counter() - started
    return target[:, 0] if vector else target


@dataclass
class EmbeddingTransfer:
    weight: torch.Tensor
    plan: InitPlan


def initialise_embeddings(source_embeddings: Union[torch.Tensor, torch.nn.Embedding],
                          token_map: TokenMap, target_size: Optional[int] = None,
                          init: str = "fvt", *, dtype: Optional[torch.dtype] = None,
                          device: Union[str, torch.device, None] = None,
                          seed: int = 0) -> EmbeddingTransfer:
    """As transfer_embeddings, also returning the plan with its counts."""
    weight = source_embeddings.weight if isinstance(source_embeddings, torch.nn.Embedding) \
        else source_embeddings
    plan = plan_initialisation(token_map, target_size, init)
    generator = torch.Generator().manual_seed(seed)
    return EmbeddingTransfer(apply_plan(plan, weight, dtype=dtype, device=device,
                                        generator=generator), plan)


def transfer_embeddings(source_embeddings: Union[torch.Tensor, torch.nn.Embedding],
                        token_map: TokenMap, target_size: Optional[int] = None,
                        init: str = "fvt", *, dtype: Optional[torch.dtype] = None,
                        device: Union[str, torch.device, None] = None,
                        seed: int = 0) -> torch.Tensor:
    """The target embedding matrix: ``target_size`` rows (default: the target
    vocabulary's size), the source's width, dtype and device unless told.
    Matched rows are the source rows, copied by ``transfer_rows_``; the
    others follow ``init`` (see ``plan_initialisation``). ``seed`` fixes the
    sampled rules.

    Raises ValueError for an unknown init, a too small target_size, a source
    matrix with fewer rows than the source vocabulary, or (fvt) a non-WordPiece
    source vocabulary that came without its tokenizer.
    """
    return initialise_embeddings(source_embeddings, token_map, target_size, init,
                                 dtype=dtype, device=device, seed=seed).weight
