"""A few minutes of training of the embedding rows after the transfer, with
the body frozen: the loop, which reads everything else from its parts.

For an encoder whose corpus has passages long enough to cut, the
transferred model (the student) learns search between the halves of the
domain's passages, every row training; otherwise it reads a passage with
the target tokenizer, the source model (the teacher) reads it with the
source tokenizer, and the student's word vectors learn to match the
teacher's; for a causal language model the new rows learn the next-token
loss of the corpus, input rows through the body and output rows directly
(``objectives.py``: each objective whole). Words are aligned by character
spans (the tokenizers' offsets), never by re-tokenising strings. Teacher
and student run the same transformer body, held once: the teacher differs
only by its input embeddings, which are fed as ``inputs_embeds``. Only
embedding rows train: the new ones (those the transfer did not copy, read
from its token map, which stay bit-exact) or, as the objective or the
settings say, all; a tied output layer follows them. The
settings are one checked object (``settings.py``); the passages are
tokenised once (``passage_pool.py``); a run lasts a number of steps or a
time budget (``budget.py``); the device policy is ``backend.py``. On a GPU
the step is replayed as a CUDA graph (``graphed_step.py``) and nothing in
it waits for the device (``step_losses.py`` reads the losses every few
steps).
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from tqdm.auto import tqdm

from vocabxfer.errors import CorpusError, ModelError, VocabxferError
from vocabxfer.initialisation.plan import special_by_role
from vocabxfer.models.devices import DeviceLike, resolve_device
from vocabxfer.models.in_memory import ModelTransfer, check_fits
from vocabxfer.refinement import distributed
from vocabxfer.refinement.backend import attention_for_training, graphs_step, uses_bf16
from vocabxfer.refinement.budget import Horizon
from vocabxfer.refinement.graphed_step import GraphedStep
from vocabxfer.refinement.keep_best import BestRows, Kept, job_score
from vocabxfer.refinement.objectives import OBJECTIVES, Objective, Trained, objective_for
from vocabxfer.refinement.passage_pool import MIN_WORDS_PER_HALF, PassagePool
from vocabxfer.refinement.plotting import plot_losses
from vocabxfer.refinement.row_adam import RowAdam
from vocabxfer.refinement.settings import RefineSettings
from vocabxfer.refinement.sharding import is_sharded
from vocabxfer.refinement.step_losses import StepLosses
from vocabxfer.training.corpus import Texts, hold_out, read_texts
from vocabxfer.vocabularies.matching import TokenMap

logger = logging.getLogger(__name__)

MIN_PASSAGES = 8
# The validation checks' share of a time budget, at most: a second spent
# checking is a second not spent training.
CHECK_SHARE = 0.15
# Passages tokenised to choose from: a few times what the run reads; with a
# time budget the steps are not known, so a pool that a fast device would
# read a few times over in a minute.
POOL_PER_DRAW, MIN_POOL, BUDGET_POOL = 4, 10_000, 32_768


@dataclass
class Refinement:
    """What refine did: steps, the loss at each, which rows trained, time."""

    steps: int
    trained_rows: int
    losses: List[float] = field(default_factory=list)
    seconds: float = 0.0  # the whole call
    plot: Optional[Path] = None
    objective: str = "words"
    setup_seconds: float = 0.0  # reading and tokenising the pool, before the first step
    kept: Optional[Kept] = None  # the validation checks, and whose rows were kept

    def __str__(self) -> str:
        # Means over up to 10 steps at each end, never overlapping, so that
        # a short run still shows where it started and ended.
        window = max(1, min(10, len(self.losses) // 2))
        first = sum(self.losses[:window]) / max(1, len(self.losses[:window]))
        last = sum(self.losses[-window:]) / max(1, len(self.losses[-window:]))
        text = (f"refined {self.trained_rows:,} embedding rows for {self.steps} steps in "
                f"{self.seconds:.0f} s; {OBJECTIVES[self.objective].loss_name} {first:.4f} -> {last:.4f}")
        text += f"; loss curve in {self.plot}" if self.plot else ""
        return text + (f"\n  {self.kept}" if self.kept is not None and self.kept.checks else "")


def teacher_embeddings(source_model: Any, model: Any) -> torch.Tensor:
    """The teacher's input embedding rows; the teacher must be the student's
    architecture (the body they share)."""
    if isinstance(source_model, torch.Tensor):
        return source_model.detach()
    if isinstance(source_model, torch.nn.Embedding):
        return source_model.weight.detach()
    student, teacher = getattr(model, "config", None), getattr(source_model, "config", None)
    fields = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads")
    if type(source_model) is not type(model) or student is None or teacher is None or any(
            getattr(student, name, None) != getattr(teacher, name, None) for name in fields):
        raise ModelError(f"refine: the student ({type(model).__name__}) and the teacher "
                         f"({type(source_model).__name__}) are different architectures; the "
                         "teacher must be the model the student was transferred from")
    return source_model.get_input_embeddings().weight.detach()


def body_of(model: Any) -> Any:
    """The transformer body that takes inputs_embeds: the encoder of an
    encoder-decoder model, the base model (no head) otherwise."""
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return model.get_encoder()
    return getattr(model, "base_model", model)


def token_map_of(transfer: Union[TokenMap, ModelTransfer]) -> TokenMap:
    """The token map of a transfer: given as it is, or the one a
    ``transfer_model`` result carries."""
    token_map = transfer.token_map if isinstance(transfer, ModelTransfer) else transfer
    if not isinstance(token_map, TokenMap):
        raise VocabxferError(f"refine: expected the transfer's TokenMap (match_vocab, or "
                             f"transfer_model's result), got a {type(transfer).__name__}")
    return token_map


def refine(model: Any, source_model: Any, transfer: Union[TokenMap, ModelTransfer],
           texts: Texts, settings: Optional[RefineSettings] = None, *,
           device: DeviceLike = None, keep: Optional[Texts] = None,
           **options: Any) -> Refinement:
    """Refine the transferred `model` (changed in place) against the source
    model it came from, on `texts` (passages, or text files of one passage
    per line), as `settings` say (a ``RefineSettings``, or its fields as
    keyword options: ``refine(..., steps=500)``).

    `source_model` is the teacher: the source model itself (only its input
    embeddings are used: teacher and student share the body, held once), or
    its input embedding matrix. `transfer` is the token map the transfer
    used (``match_vocab``'s, or ``transfer_model``'s result): it says which
    rows were copied, and gives both vocabularies; nothing is matched
    again.

    A run lasts ``steps`` steps or ``seconds`` seconds of wall time
    (counted from the call, tokenising included), whichever ends first when
    both are given; the learning rate decays to 0 over that horizon. With
    neither, it lasts the objective's default budget for the device (an
    encoder 180 s on a CPU and 30 s on a GPU, a causal LM 600 s and 60 s).
    Each step reads ``batch_size`` passages (truncated to ``max_length``
    tokens). An encoder learns, by default, the job it is used for on the
    domain's text: search between passage halves (each passage cut in two
    at a word, each half's vector nearest its own other half's among the
    batch's; Adam, lr 1e-3, every row), where most passages are long enough
    to cut. Elsewhere (or with ``objective="words"``) the student's word
    vectors (its hidden states at ``layers``, mean-pooled over each unit's
    tokens, units aligned by character span: by default the pieces of text
    both tokenizations cut alike, and the special tokens, ``align``) turn
    towards the teacher's (cosine distance; Adam, lr 1e-3, the new rows). A
    causal language model learns the next-token loss (lazy row Adam, lr
    1e-3).
    Passages are drawn in proportion to how many trained rows' tokens they
    hold within ``max_length`` (those with none teach nothing and are never
    drawn). The forward passes run in bfloat16 autocast where the device
    computes it fast (``precision="auto"``), else in float32; the trained
    rows stay float32. Only embedding rows train: with ``trainable="new"``
    the rows the transfer did not copy (the copied rows stay bit-exact);
    with ``"all"``, every row; by default, the objective's choice. A tied
    output layer follows. The loss shows on a tqdm bar (read from the device
    every 20 steps); ``plot`` writes its curve. On a CUDA GPU batches are
    padded to one shape and the step, captured once as a CUDA graph, is
    replayed; the CPU cuts each batch to its longest passage.

    `keep` (passages or text files of another domain, for a causal LM):
    ``keep_share`` of each batch is drawn from it; the new tokens never
    occur there, so its next-token loss lowers the new output rows where
    they must not take probability from the old ones (what an extended
    vocabulary needs: old text read as before, and predicted as before).

    Inside a torch.distributed job (a process group initialised before the
    call) every rank draws the same global batch of ``batch_size`` passages
    and reads its share; the gradients are summed across ranks, so the ranks
    end with the rows one process would train from the same batch and seed.
    Only rank 0 writes the plot; a rank that loses the others stops with one
    error, the weights as they were.

    Raises VocabxferError before any weight changes for bad settings,
    CorpusError for too few passages or none holding a trained row's token,
    ModelError for a teacher of another architecture, a model holding NaN,
    or a token map that does not fit the models.
    """
    started = time.perf_counter()
    settings = RefineSettings.from_options(settings, options)
    token_map = token_map_of(transfer)
    ranks = distributed.current()
    if settings.batch_size < ranks.world:
        raise VocabxferError(f"refine: batch_size {settings.batch_size} is smaller than the "
                             f"{ranks.world} ranks of the job; expected at least one passage "
                             "per rank (batch_size is the global batch)")
    passages = read_texts(texts)
    if len(passages) < MIN_PASSAGES:
        raise CorpusError(f"refine: the corpus has {len(passages)} passage(s) with text; "
                          f"expected at least {MIN_PASSAGES}")
    objective = objective_for(model, settings.objective, passages)
    # Validation passages for the checks, never drawn for a step.
    validation = hold_out(passages, objective.validation_passages, settings.seed) \
        if settings.checks else []
    if validation:
        excluded = set(validation)
        passages = [passage for passage in passages if passage not in excluded]
    device = resolve_device(device)
    if device is not None and is_sharded(model):
        raise ModelError("refine: the model's body is sharded (shard_body) and placed "
                         "already; pass device=None")
    teacher_rows = teacher_embeddings(source_model, model)
    embedding = model.get_input_embeddings()
    check_model(model, embedding, teacher_rows, settings.layers)
    lr = objective.default_lr if settings.lr is None else settings.lr
    source_vocab, target_vocab = token_map.source, token_map.target
    check_fits(source_vocab, teacher_rows.shape[0], embeddings="the source embeddings",
               op="refine: ")
    check_fits(target_vocab, embedding.weight.shape[0], which="target",
               embeddings="the target embeddings", op="refine: ")
    if teacher_rows.shape[1] != embedding.weight.shape[1]:
        raise ModelError(f"refine: the teacher's embeddings are {teacher_rows.shape[1]} wide but "
                         f"the student's {embedding.weight.shape[1]}; expected the same model")
    trained_ids = trainable_rows(token_map, settings.trainable or objective.default_trainable)
    if not trained_ids.numel():
        raise VocabxferError("refine: every target row was copied from the source, so no row "
                             "is left to refine; pass trainable='all' to refine them all")
    # Which token ids are trained rows: the pool counts them per passage
    # (the loss reads the same from the trained rows' slots).
    is_trained = torch.zeros(len(target_vocab), dtype=torch.bool)
    is_trained[trained_ids] = True
    steps, seconds = settings.steps, settings.seconds
    pool_size = max(POOL_PER_DRAW * steps * settings.batch_size, MIN_POOL) if steps \
        else BUDGET_POOL
    kept = read_texts(keep) if keep is not None else []
    if kept and not objective.trains_output:
        raise VocabxferError(f"refine: text to keep is read by the next-token objective only; "
                             f"the {objective.name} objective does not use it")
    pool = PassagePool(passages, source_vocab, target_vocab, is_trained, settings.max_length,
                       pool_size=pool_size, seed=settings.seed,
                       with_source=objective.reads_source_side, align=settings.align,
                       keep_passages=kept, keep_share=settings.keep_share,
                       with_halves=objective.reads_halves)
    if objective.reads_halves and not bool(pool.paired.any()):
        raise CorpusError(f"refine: the {objective.name} objective learns search between "
                          "passage halves, but no passage read has the "
                          f"{2 * MIN_WORDS_PER_HALF} words two halves need; expected passages "
                          "of sentences (or use the 'words' objective)")

    if device is not None:
        model.to(device)
    device = embedding.weight.device
    if steps is None and seconds is None:
        seconds = objective.seconds_for(device)
    pool.to(device)
    teacher_rows = teacher_rows.to(device=device, dtype=embedding.weight.dtype)
    output = model.get_output_embeddings() if objective.trains_output else None
    tied = output is not None and output.weight is embedding.weight
    trained = trained_parameters(embedding, None if tied else output, trained_ids, device)
    body = body_of(model)
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    # On a GPU the step runs as one CUDA graph (graphed_step.py); the
    # learning rate is then a device tensor the graph reads.
    graphed = graphs_step(model, device, ranks.world, pool.fixed_shape)
    rate = torch.tensor(float(lr), device=device) if graphed else None
    optimizer = make_optimizer(settings.optimizer, objective, trained,
                               lr if rate is None else rate)
    bf16 = uses_bf16(settings.precision, device)

    def one_step(picks: torch.Tensor) -> torch.Tensor:
        """One step on the passages `picks`; gives the batch's loss (on the
        device: read later, with StepLosses)."""
        batch = pool.batch(picks)
        # No cast cache: the frozen body's weights are recast every pass
        # anyway (autocast caches only leaves that require grad), and a
        # CUDA graph capture refuses the cache.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16,
                            cache_enabled=False):
            total, count = objective.loss(batch, body, embedding.weight.detach(), trained,
                                          teacher_rows=teacher_rows, layers=settings.layers,
                                          output=output, tied=tied)
        both = distributed.sum_across(
            ranks, torch.stack([total.detach().float(), count.detach().float()]))
        global_count = both[1].clamp(min=1e-6)  # words (or tokens) of the global batch
        loss = total / global_count
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.sum_gradients(ranks, trained.parameters())
        optimizer.step()
        return both[0] / global_count

    result = Refinement(steps=0, trained_rows=int(trained_ids.numel()), objective=objective.name)
    # Each trained tensor beside the model's table it stands in for.
    tables, trained_tensors = table_pairs(embedding, output, trained)

    def write(values: List[torch.Tensor]) -> None:
        with torch.no_grad():
            for table, value in zip(tables, values):
                table.index_copy_(0, trained.ids, value.detach().to(table.dtype))

    best, start_rows = None, []
    if validation:
        # Checks write the rows into the model's tables: kept to undo them.
        start_rows = [value.detach().clone() for value in trained_tensors]
        measure, items, score = job_score(objective, target_vocab, validation)
        best = BestRows(trained_tensors, write, measure, items,
                        lambda scored: distributed.agree(ranks, score(scored), device), model)
        result.kept = best.kept
    checks_done = 0
    horizon = Horizon(steps, None if seconds is None else started + seconds)
    result.setup_seconds = time.perf_counter() - started
    try:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        model.eval()  # no dropout: the student should match a deterministic teacher
        bar = tqdm(total=steps, desc="refine", unit="step", disable=not settings.show_progress)
        losses = StepLosses(trained.parameters(), lr, bar)
        picks = pool.picks(settings.batch_size, ranks.share)  # every rank: the same batches
        step = GraphedStep(one_step) if graphed else one_step
        checks = settings.checks
        if best is not None:
            best.check(0)  # the zero-shot start
            if seconds is not None:
                checks = affordable_checks(checks, best.kept.seconds, seconds)
                checks = int(distributed.agree(ranks, checks, device))  # the clocks differ
                if checks < settings.checks:
                    best.kept.share_limit = CHECK_SHARE
        with attention_for_training(device):
            while True:
                progress = horizon.progress(result.steps)
                if seconds is not None:  # the clocks differ: rank 0 decides
                    progress = distributed.agree(ranks, progress, device)
                if progress >= 1:
                    break
                if best is not None and progress >= (checks_done + 1) / checks:
                    losses.read()  # a diverged run stops here, never scored or kept
                    best.check(result.steps)
                    checks_done += 1
                if rate is not None:
                    rate.fill_(lr * (1 - progress))
                else:
                    for group in optimizer.param_groups:
                        group["lr"] = lr * (1 - progress)
                losses.add(step(next(picks)))  # read every few steps
                result.steps += 1
            losses.read()
            if best is not None and best.kept.checks[-1].step != result.steps:
                best.check(result.steps)  # the end
        bar.close()
        result.losses = losses.values
        result.seconds = time.perf_counter() - started
        if settings.plot is not None and ranks.writes:
            result.plot = plot_losses(result.losses, Path(settings.plot), objective.loss_axis)
    except BaseException:
        if start_rows:  # a check wrote rows: whatever failed leaves the model as it was
            write(start_rows)
        raise
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(requires_grad[name])
        model.train(was_training)
    write(best.rows() if best is not None else trained_tensors)
    return result


def affordable_checks(checks: int, one_check: float, seconds: float) -> int:
    """How many checks after the start a time budget affords: at most
    `checks`, at least one (the end), and together with the start no more
    than CHECK_SHARE of the budget, since every second of checking is a
    second of training less."""
    return max(1, min(checks, int(CHECK_SHARE * seconds / max(one_check, 1e-9)) - 1))


def table_pairs(embedding: Any, output: Optional[torch.nn.Linear], trained: Trained
                ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """(the model's tables, the trained tensors standing in for their rows
    trained.ids), in the same order: the input rows, then, when an untied
    head trains, its rows and its biases."""
    pairs = [(embedding.weight, trained.rows)]
    if output is not None:
        pairs += [(output.weight, trained.output_rows), (output.bias, trained.output_bias)]
    pairs = [(table, value) for table, value in pairs if value is not None]
    return [table for table, _ in pairs], [value for _, value in pairs]


def make_optimizer(name: str, objective: Objective, trained: Trained,
                   lr: Union[float, torch.Tensor]) -> Any:
    """``row-adam`` (lazy Adam: a row moves only when its token is read) or
    torch's ``adam``; ``auto`` is the objective's default. A tensor `lr` (a
    CUDA graph's) makes torch's Adam capturable."""
    if name == "auto":
        name = objective.default_optimizer
    if name == "row-adam":
        return RowAdam(trained.parameters(), lr=lr)
    return torch.optim.Adam(trained.parameters(), lr=lr,
                            capturable=isinstance(lr, torch.Tensor))


def trained_parameters(embedding: Any, untied_output: Optional[torch.nn.Linear],
                       trained_ids: torch.Tensor, device: torch.device) -> Trained:
    """Copies of the rows that train, float32 whatever the model's dtype,
    and where each sits: the input rows, and an untied head's rows and
    biases for the same ids."""
    ids = trained_ids.to(device)
    slot = torch.full((len(embedding.weight),), -1, dtype=torch.int64)
    slot[trained_ids] = torch.arange(len(trained_ids))

    def copy_of(table: torch.Tensor) -> torch.Tensor:
        return table.detach()[ids].float().clone().requires_grad_(True)

    trained = Trained(rows=copy_of(embedding.weight), slot=slot.to(device), ids=ids)
    if untied_output is not None:
        trained.output_rows = copy_of(untied_output.weight)
        if untied_output.bias is not None:
            trained.output_bias = copy_of(untied_output.bias)
    return trained


def check_model(model: Any, embedding: Any, teacher_rows: torch.Tensor,
                layers: Sequence[int]) -> None:
    """The student and teacher hold real, finite weights, and every layer
    asked for exists. A NaN in a row the body reads spreads through the
    attention to every word's loss and then to the trained rows."""
    if not isinstance(embedding, torch.nn.Embedding):
        raise ModelError(f"refine: the model ({type(model).__name__}) has no input embeddings "
                         "(get_input_embeddings() gave no nn.Embedding)")
    for what, table in (("the student's input embeddings", embedding.weight),
                        ("the teacher's input embeddings", teacher_rows)):
        if table.is_meta:
            raise ModelError(f"refine: {what} are on the meta device and hold no weights; "
                             "load the model with its weights first")
        if not table.dtype.is_floating_point:
            raise ModelError(f"refine: {what} are {table.dtype}, expected floating point")
        finite = torch.isfinite(table).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().squeeze(1)
            raise ModelError(f"refine: {what} hold NaN or infinite values in {bad.numel():,} "
                             f"row(s) (the first: row {int(bad[0])}); expected finite weights")
    for name, parameter in body_of(model).named_parameters():
        if parameter.is_meta:
            raise ModelError(f"refine: the model's {name} is on the meta device and holds no "
                             "weights; load the model with its weights first")
    # A NaN in the frozen body would turn every loss to NaN, and the
    # divergence check would then blame the learning rate.
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in tensors:
        if tensor.dtype.is_floating_point and not tensor.is_meta and \
                not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"refine: the model's {name} holds NaN or infinite values; "
                             "expected finite weights (the checkpoint is damaged, or an "
                             "earlier step diverged)")
    config = getattr(model, "config", None)
    depth = getattr(config, "num_hidden_layers", None)
    if getattr(config, "is_encoder_decoder", False):
        depth = getattr(config, "encoder_layers", None) or getattr(config, "num_layers", depth)
    if isinstance(depth, int):
        # hidden_states holds the embeddings' output and one per layer.
        wrong = [layer for layer in layers if not -(depth + 1) <= layer <= depth]
        if wrong:
            raise VocabxferError(f"refine: layers {wrong} do not exist; the model's hidden "
                                 f"states are numbered 0 (embeddings) to {depth} (or -1 to "
                                 f"-{depth + 1} from the end)")


def trainable_rows(token_map: TokenMap, trainable: str) -> torch.Tensor:
    """The target rows that train: all, or those the transfer did not copy
    (neither matched nor a special token it filled by role)."""
    if trainable == "all":
        return torch.arange(len(token_map.target))
    role_targets, _, _ = special_by_role(token_map, token_map.unmatched_target_ids.tolist())
    copied = torch.zeros(len(token_map.target), dtype=torch.bool)
    copied[token_map.target_ids] = True
    copied[torch.tensor(role_targets, dtype=torch.int64)] = True
    return (~copied).nonzero().squeeze(1)
