"""From a token map to a new embedding matrix: matched rows are copied, the
others start from what the source model knows."""

from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Union

import torch

from vocabxfer.ops import checks as _op_checks

from vocabxfer.vocabularies import families

from vocabxfer.initialisation import fvt
from vocabxfer.errors import VocabxferError
from vocabxfer.vocabularies.matching import TokenMap
from vocabxfer.ops.rows import segment_mean_, transfer_rows_

INITS = ("fvt", "mean", "normal", "random")

# How each target row was initialised, as counted in the plan.
MATCHED = "matched"
SPECIAL_ROLE = "special by role"
FVT = "fvt"
MEAN = "mean"
MEAN_FALLBACK = "mean (no known pieces)"
NORMAL = "normal"
RANDOM = "random"
PADDING = "padding rows"


def as_ids(values: List[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


@dataclass
class InitPlan:
    """Which rule fills each target row, decided once from the token map and
    applied (``apply``) to every vocabulary-sized tensor of a model. Its
    index tensors are checked once and then passed to the ops as checked:
    change them only through torch (a change through numpy, which torch
    cannot see, is not checked again)."""

    token_map: TokenMap
    target_size: int
    init: str
    copy_target_ids: torch.Tensor
    copy_source_ids: torch.Tensor
    segments: Optional[fvt.Segments]
    # Weights of the FVT pieces (None: uniform) for input embeddings, and
    # for the output layer and its biases.
    input_weights: Optional[torch.Tensor]
    output_weights: Optional[torch.Tensor]
    mean_ids: torch.Tensor
    sampled_ids: torch.Tensor
    counts: Dict[str, int] = field(default_factory=dict)
    # Each index tensor and its version when they were last found valid
    # (check_indices): a tensor replaced is not the one held here, and an
    # in-place change through torch bumps its version.
    _checked: Optional[tuple] = field(default=None, init=False, repr=False, compare=False)

    def __str__(self) -> str:
        parts = [f"{rule} {count:,}" for rule, count in self.counts.items() if count]
        return f"initialised {self.target_size:,} rows ({self.init}): " + ", ".join(parts)

    def needed_source_ids(self) -> torch.Tensor:
        """The sorted source ids whose rows the plan copies or averages: all
        a reader of a checkpoint needs besides the statistics."""
        used = [self.copy_source_ids]
        if self.segments is not None:
            used.append(self.segments.source_ids)
        return torch.unique(torch.cat(used))

    def index_tensors(self) -> List[torch.Tensor]:
        tensors = [self.copy_target_ids, self.copy_source_ids]
        if self.segments is not None:
            tensors += [self.segments.target_ids, self.segments.source_ids, self.segments.offsets]
        return tensors + [w for w in (self.input_weights, self.output_weights) if w is not None]

    def check_indices(self) -> None:
        """Check the plan's indices for a target of ``target_size`` rows and
        the whole source vocabulary, as the ops would (and raising as they
        do): once, on the host, so that every apply can pass them to the ops
        as checked (no check per call, none on the device); again only if one
        was replaced or changed in place."""
        tensors = self.index_tensors()
        if self._checked is not None and len(self._checked) == len(tensors) and all(
                held is tensor and version == tensor._version
                for (held, version), tensor in zip(self._checked, tensors)):
            return
        source_rows = len(self.token_map.source)
        _op_checks.check_transfer_rows_values(self.copy_target_ids, self.copy_source_ids,
                                              self.target_size, source_rows)
        if self.segments is not None:
            _op_checks.check_segment_mean_values(
                self.segments.target_ids, self.segments.source_ids, self.segments.offsets, None,
                self.target_size, source_rows)
            for weights in (self.input_weights, self.output_weights):
                _op_checks.check_weights("segment_mean_", weights)
        self._checked = tuple((tensor, tensor._version) for tensor in tensors)

    def needs_statistics(self) -> bool:
        return bool(self.mean_ids.numel()) or self.needs_std()

    def needs_std(self) -> bool:
        return self.init == "normal" and bool(self.sampled_ids.numel())

    def apply(self, source_rows: torch.Tensor, *, dtype: Optional[torch.dtype] = None,
              device: Union[str, torch.device, None] = None,
              generator: Optional[torch.Generator] = None,
              rows_held: Optional[torch.Tensor] = None,
              statistics: Optional["RowStatistics"] = None,
              output_layer: bool = False) -> torch.Tensor:
        """A new (target_size, width) matrix, or a (target_size,) vector for
        a 1-D source such as an output bias, filled by the plan from
        `source_rows` (its dtype and device unless told). Sampled rules give
        a bias zeros, as a freshly built model does.

        By default `source_rows` is the whole source matrix. A reader that
        holds only some rows passes their source ids (``rows_held``, sorted,
        covering ``needed_source_ids()``) and the ``statistics`` of all the
        source vocabulary's rows (``row_statistics``); the result is the same.
        ``output_layer`` picks the output layer's piece weights.

        Raises VocabxferError for a source with fewer rows than the source
        vocabulary.
        """
        vector = source_rows.dim() == 1
        source = source_rows.detach()
        source = source[:, None] if vector else source
        source_vocab = len(self.token_map.source)
        if rows_held is None and (source.dim() != 2 or source.shape[0] < source_vocab):
            raise VocabxferError(
                f"the source tensor has shape {tuple(source_rows.shape)}, but the source "
                f"vocabulary has {source_vocab} tokens; expected at least that many rows")
        device = torch.device(device) if device is not None else source.device
        source = source.to(device)
        dtype = dtype or source.dtype
        target = torch.empty(self.target_size, source.shape[1], dtype=dtype, device=device)

        # The indices stay on the host: the ops check host indices there and
        # copy them to a GPU without waiting for it. The plan's own indices
        # are checked once (check_indices); positions in a partial source
        # (rows_held) are checked by the ops on every call.
        checked = rows_held is None
        if checked:
            self.check_indices()

        def on(ids: torch.Tensor) -> torch.Tensor:
            """Source ids as positions in `source`."""
            return ids if rows_held is None else torch.searchsorted(rows_held, ids)

        transfer_rows_(target, self.copy_target_ids, source, on(self.copy_source_ids),
                       indices_checked=checked)
        if self.segments is not None and len(self.segments):
            weights = self.output_weights if output_layer else self.input_weights
            segment_mean_(target, self.segments.target_ids, source, on(self.segments.source_ids),
                          self.segments.offsets, weights, indices_checked=checked)
        if statistics is None and self.needs_statistics():
            statistics = row_statistics(chunks_of(source[:source_vocab]), self.needs_std())
        if self.mean_ids.numel():
            target[self.mean_ids.to(device)] = statistics.mean.to(device=device, dtype=dtype)
        if self.sampled_ids.numel():
            count, width = self.sampled_ids.numel(), source.shape[1]
            if vector:
                samples = torch.zeros(count, width)
            else:
                samples = torch.randn(count, width, generator=generator)
                if self.init == "normal":
                    samples = samples * statistics.std.cpu() + statistics.mean.cpu()
            target[self.sampled_ids.to(device)] = samples.to(device=device, dtype=dtype)
        return target[:, 0] if vector else target


STATISTICS_CHUNK_ROWS = 4096


@dataclass
class RowStatistics:
    """Mean and standard deviation per column of the source rows, float64."""

    mean: torch.Tensor
    std: Optional[torch.Tensor] = None


def chunks_of(rows: torch.Tensor, size: int = STATISTICS_CHUNK_ROWS) -> Iterator[torch.Tensor]:
    for start in range(0, rows.shape[0], size):
        yield rows[start:start + size]


def row_statistics(chunks: Iterable[torch.Tensor], with_std: bool = False) -> RowStatistics:
    """Column mean (and std, if asked) of rows given in chunks (of
    STATISTICS_CHUNK_ROWS rows, from memory or from a file: the same chunks
    give the same bits), summed in float64 as they are read: no float copy
    of the whole matrix is ever made."""
    total = squares = None
    count = 0
    for chunk in chunks:
        sums = chunk.sum(0, dtype=torch.float64)
        total = sums if total is None else total + sums
        if with_std:
            chunk = chunk.to(torch.float64)
            sums_of_squares = (chunk * chunk).sum(0)
            squares = sums_of_squares if squares is None else squares + sums_of_squares
        count += chunk.shape[0]
    if not count:
        raise VocabxferError("the source has no rows to take a mean of")
    mean = total / count
    std = None
    if with_std:
        std = ((squares - count * mean * mean) / max(1, count - 1)).clamp(min=0).sqrt()
    return RowStatistics(mean=mean, std=std)


def special_by_role(token_map: TokenMap, unmatched: List[int]):
    """Unmatched special tokens that the source has a token of the same role
    for (or its stand-in: cls for bos, ...): (target ids, source ids, rest)."""
    source, target = token_map.source, token_map.target
    target_ids, source_ids, rest = [], [], []
    for target_id in unmatched:
        role = target.role_of(target.tokens[target_id])
        source_token = None
        if role is not None:
            source_token = source.special_tokens_map.get(role) or source.special_tokens_map.get(
                families.ROLE_STAND_INS.get(role, ""))
        if source_token is not None and source_token in source.ids:
            target_ids.append(target_id)
            source_ids.append(source.ids[source_token])
        else:
            rest.append(target_id)
    return target_ids, source_ids, rest


def plan_initialisation(token_map: TokenMap, target_size: Optional[int] = None,
                        init: str = "fvt", *,
                        piece_weights: fvt.PieceWeighting = fvt.DEFAULT_PIECE_WEIGHTS,
                        output_piece_weights: Optional[fvt.PieceWeighting] = None) -> InitPlan:
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

    ``piece_weights`` weighs the FVT pieces of a token: ``"uniform"``,
    ``"first"`` (earlier pieces more: n, n-1, ..., 1), ``"last"`` (later
    pieces more), ``"length"`` (by the length of each piece's text, the
    default: the best in benchmarks/eval_quality.py; alike for the pieces
    of a token that holds a byte fragment), or a callable of
    (position, count, length) tensors. ``output_piece_weights``
    does the same for an untied output layer and its biases (default: as
    ``piece_weights``; on a masked-LM head "length" measured best there too).

    Raises VocabxferError for an unknown init or weighting or a target_size
    smaller than the target vocabulary, VocabError for a source that cannot
    split tokens.
    """
    if init not in INITS:
        raise VocabxferError(f"init {init!r} is not one of {', '.join(INITS)}")
    vocab_size = len(token_map.target)
    target_size = vocab_size if target_size is None else int(target_size)
    if target_size < vocab_size:
        raise VocabxferError(f"target_size {target_size} is smaller than the target vocabulary "
                             f"({vocab_size} tokens)")
    role_targets, role_sources, remaining = special_by_role(
        token_map, token_map.unmatched_target_ids.tolist())
    counts = {MATCHED: len(token_map), SPECIAL_ROLE: len(role_targets)}

    segments = input_weights = output_weights = None
    mean_ids: List[int] = []
    sampled: List[int] = []
    if init == "fvt":
        segments = fvt.split_tokens(token_map.source, token_map.target, remaining)
        counts[FVT] = len(segments)
        counts[MEAN_FALLBACK] = len(segments.unsplittable)
        mean_ids = list(segments.unsplittable)
        input_weights = fvt.piece_weights(segments, token_map.source, piece_weights)
        output_weights = input_weights if output_piece_weights in (None, piece_weights) else \
            fvt.piece_weights(segments, token_map.source, output_piece_weights)
    elif init == "mean":
        mean_ids = remaining
        counts[MEAN] = len(remaining)
    else:
        sampled = remaining
        counts[NORMAL if init == "normal" else RANDOM] = len(remaining)
    padding = list(range(vocab_size, target_size))
    counts[PADDING] = len(padding)

    return InitPlan(
        token_map=token_map, target_size=target_size, init=init,
        copy_target_ids=torch.cat([token_map.target_ids, as_ids(role_targets)]),
        copy_source_ids=torch.cat([token_map.source_ids, as_ids(role_sources)]),
        segments=segments, input_weights=input_weights, output_weights=output_weights,
        mean_ids=as_ids(mean_ids + padding), sampled_ids=as_ids(sampled), counts=counts)


def transfer_embeddings(source_embeddings: Union[torch.Tensor, torch.nn.Embedding],
                        token_map: TokenMap, target_size: Optional[int] = None,
                        init: str = "fvt", *, dtype: Optional[torch.dtype] = None,
                        device: Union[str, torch.device, None] = None, seed: int = 0,
                        piece_weights: fvt.PieceWeighting = fvt.DEFAULT_PIECE_WEIGHTS
                        ) -> torch.Tensor:
    """The target embedding matrix: ``target_size`` rows (default: the target
    vocabulary's size), the source's width, dtype and device unless told.
    Matched rows are the source rows, copied by ``transfer_rows_``; the
    others follow ``init`` (see ``plan_initialisation``, whose plan also
    counts the rows by rule, and for ``piece_weights``). ``seed`` fixes the
    sampled rules.

    Raises VocabxferError for an unknown init, a too small target_size or a
    source matrix with fewer rows than the source vocabulary, and VocabError
    (fvt) for a non-WordPiece source vocabulary that came without its
    tokenizer.
    """
    weight = source_embeddings.weight if isinstance(source_embeddings, torch.nn.Embedding) \
        else source_embeddings
    plan = plan_initialisation(token_map, target_size, init, piece_weights=piece_weights)
    return plan.apply(weight, dtype=dtype, device=device,
                      generator=torch.Generator().manual_seed(seed))
