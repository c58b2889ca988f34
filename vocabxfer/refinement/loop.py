"""A few minutes of training of the new embedding rows after the transfer,
against the source model they came from, with its body frozen.

For an encoder the transferred model (the student) reads a passage with the
target tokenizer, the source model (the teacher) reads it with the source
tokenizer, and the student's word vectors learn to match the teacher's; for
a causal language model the new rows learn the next-token loss of the
corpus, input rows through the body and output rows directly
(``objectives.py``). Words are aligned by character spans (the tokenizers'
offsets), never by re-tokenising strings. Teacher and student run the same
transformer body, held once: the teacher differs only by its input
embeddings, which are fed as ``inputs_embeds``. Only the new rows train (by
default those the transfer did not copy, which stay bit-exact); a tied
output layer follows them. The passages are tokenised once
(``passage_pool.py``); a run lasts a number of steps or a time budget
(``budget.py``). On a GPU the step is replayed as a CUDA graph
(``graphed_step.py``) and nothing in it waits for the device
(``step_losses.py`` reads the losses every few steps).
"""

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from vocabxfer.checkpoints.atomic import check_writable_place, output_path, write_file
from vocabxfer.models.devices import DeviceLike, resolve_device
from vocabxfer.errors import CorpusError, ModelError, VocabxferError
from vocabxfer.initialisation.plan import special_by_role
from vocabxfer.vocabularies.matching import match_vocab
from vocabxfer.models.in_memory import check_fits, check_seed
from vocabxfer.refinement import distributed
from vocabxfer.refinement.budget import Horizon
from vocabxfer.refinement.objectives import (OBJECTIVES, Trained, is_causal_lm, next_token_loss, word_loss)
from vocabxfer.refinement.passage_pool import PassagePool
from vocabxfer.refinement.row_adam import RowAdam
from vocabxfer.refinement.sharding import is_sharded
from vocabxfer.refinement.graphed_step import GraphedStep, can_capture
from vocabxfer.refinement.step_losses import StepLosses
from vocabxfer.vocabularies.readers import VocabSource, load_vocab
from vocabxfer.training.tokenizer import corpus_paths, iter_passages

logger = logging.getLogger(__name__)

# Chosen on a validation split of the training passages of Python's
# documentation (never the passages benchmarks/eval_quality.py evaluates on):
# a cosine word loss beat squared distance, 32 passages of 32 tokens beat
# 16 of 64 at the same cost, and 5e-3 decaying linearly to 0 beat 3e-3, 6e-3
# or 1e-2 held constant. Checked on the Unix manual pages' validation split:
# lr 3e-3 to 2e-2, 16 to 64 passages and 24 tokens found nothing better.
# With passages drawn by trained tokens (TrainedTokenSampler), 250 steps of
# 64 and 125 of 128 matched 500 of 32 within the seed's noise (about 0.001).
# 500 steps take under 3 minutes for a MiniLM-sized model on a 2-core CPU.
# For the next-token objective the rate was chosen on the Unix manual pages'
# validation passages with SmolLM2-135M (benchmarks/eval_lm.py --tune).
# Without steps or seconds a run lasts a time budget fitted to the hardware
# at hand: what the goals of this project were set for (an encoder: 3
# minutes of a 2-core CPU, 30 s of a GPU; a causal LM: 10 minutes, 60 s).
DEFAULT_SECONDS = {"words": {"cpu": 180.0, "accelerator": 30.0},
                   "next-token": {"cpu": 600.0, "accelerator": 60.0}}
DEFAULT_LR = {"words": 5e-3, "next-token": 1e-3}
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 32
TRAINABLE = ("new", "all")
OPTIMIZERS = ("auto", "row-adam", "adam")
# What the word objective aligns: whole words, or the smallest pieces of
# text both tokenizations cut alike (passage_pool.shared_cuts), with or
# without the special tokens. On the validation passages (MiniLM, 500 steps
# or the 3-minute budget, results/quality_tuning.md) spans+specials beat
# words by 0.002 on Python's documentation and by 0.0001-0.0005 on the
# manual pages, never worse.
ALIGNS = ("words", "spans", "spans+specials")
DEFAULT_ALIGN = "spans+specials"
# Chosen on validation splits (benchmarks/eval_lm.py --tune, eval_quality.py).
DEFAULT_OPTIMIZER = {"words": "adam", "next-token": "row-adam"}
# Adam moves a row by about lr per step: past 1, embedding rows of norm ~1
# are thrown far out and the loss turns to NaN; refused up front.
MAX_LR = 1.0
PRECISIONS = ("auto", "float32", "bfloat16")
MIN_PASSAGES = 8
# [CLS] and [SEP] (or a start token) take two slots; a word needs the rest.
MIN_MAX_LENGTH = 4
# Passages tokenised to choose from: a few times what the run reads; with a
# time budget the steps are not known, so a pool that a fast device would
# read a few times over in a minute.
POOL_PER_DRAW, MIN_POOL, BUDGET_POOL = 4, 10_000, 32_768
# Steps on a GPU as CUDA graphs (graphed_step.py); off to compare.
CUDA_GRAPHS = True

LOSS_NAMES = {"words": "word-alignment loss", "next-token": "next-token loss"}
Texts = Union[Sequence[str], str, os.PathLike, Sequence[Union[str, os.PathLike]]]


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

    def __str__(self) -> str:
        # Means over up to 10 steps at each end, never overlapping, so that
        # a short run still shows where it started and ended.
        window = max(1, min(10, len(self.losses) // 2))
        first = sum(self.losses[:window]) / max(1, len(self.losses[:window]))
        last = sum(self.losses[-window:]) / max(1, len(self.losses[-window:]))
        text = (f"refined {self.trained_rows:,} embedding rows for {self.steps} steps in "
                f"{self.seconds:.0f} s; {LOSS_NAMES[self.objective]} {first:.4f} -> {last:.4f}")
        return text + (f"; loss curve in {self.plot}" if self.plot else "")


def read_texts(texts: Texts) -> List[str]:
    """Passages: a list of strings as they are (blank ones left out), or the
    lines of text files: one path (a str or a path object), or a list of
    path objects (``pathlib.Path``). A list of strings is always passages,
    even where a passage names a file: what a corpus holds is text, never
    an instruction to read something else."""
    if isinstance(texts, (str, os.PathLike)) or (
            texts and all(isinstance(text, os.PathLike) for text in texts)):
        return list(iter_passages(corpus_paths(texts)))
    if not all(isinstance(text, str) for text in texts):
        raise CorpusError("refine: texts must be passages (strings), or path objects of text "
                          "files, not a mixture")
    return [text for text in texts if text.strip()]


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


def refine(model: Any, source_model: Any, source_tokenizer: VocabSource,
           target_tokenizer: VocabSource, texts: Texts, *, steps: Optional[int] = None,
           seconds: Optional[float] = None, lr: Optional[float] = None,
           batch_size: int = DEFAULT_BATCH_SIZE, device: DeviceLike = None,
           trainable: str = "new", mode: str = "exact", layers: Sequence[int] = (-1,),
           max_length: int = DEFAULT_MAX_LENGTH, seed: int = 0, precision: str = "auto",
           objective: str = "auto", optimizer: str = "auto", align: str = DEFAULT_ALIGN,
           show_progress: bool = True,
           plot: Optional[Union[str, os.PathLike]] = None) -> Refinement:
    """Refine the transferred `model` (changed in place) against the source
    model it came from, on `texts` (passages, or text files of one passage
    per line), for `steps` steps or `seconds` seconds of wall time (counted
    from the call, tokenising included), or whichever ends first when both
    are given; the learning rate decays to 0 over that horizon. With
    neither, the run lasts the default budget for the objective and the
    device (``default_seconds``: an encoder 180 s on a CPU and 30 s on a
    GPU, a causal LM 600 s and 60 s).

    `source_model` is the teacher: the source model itself (only its input
    embeddings are used: teacher and student share the body, held once), or
    its input embedding matrix. Each step reads `batch_size` passages with
    both tokenizers (truncated to `max_length` tokens) and turns the
    student's word vectors (its hidden states at ``layers``, mean-pooled over
    each word's tokens, words aligned by character span) towards the
    teacher's (cosine distance); Adam, `lr` (default 5e-3) decaying
    linearly to 0. By default (``align="spans+specials"``) the units are
    finer than words: the pieces of text both tokenizations cut alike (a new
    token is its own unit), and the special tokens of passages both sides
    read whole; ``"spans"`` leaves the special tokens out, ``"words"``
    aligns whole words. A causal language model learns the next-token loss
    instead (``objective="auto"``; see objectives.py), with a lazy Adam
    (``optimizer="auto"``: row_adam.py) at `lr` 1e-3 by default.
    Passages are drawn in proportion to how many trained rows' tokens they
    hold within `max_length` (those with none teach nothing and are never
    drawn). The forward passes run in bfloat16 autocast where the device
    computes it fast (``precision="auto"``: a GPU with bf16, a CPU with
    AVX512-BF16 or AMX), else in float32; the trained rows stay float32.
    Only embedding rows train: with ``trainable="new"`` (default) the rows
    the transfer did not copy (found by matching as ``mode`` did), which
    leaves the copied rows bit-exact; with ``"all"``, every row. A tied
    output layer follows. The loss shows on a tqdm bar (read from the
    device every 20 steps: step_losses.py); `plot` writes its curve to a
    PNG (matplotlib). ``seed`` fixes which passages are drawn. On a CUDA
    GPU batches are padded to one shape and the step, captured once as a
    CUDA graph, is replayed (graphed_step.py); the CPU cuts each batch to
    its longest passage and runs the step as it is.

    Inside a torch.distributed job (torchrun, accelerate launch: a process
    group initialised before the call) every rank draws the same global
    batch of `batch_size` passages and reads its share; the gradients are
    summed across ranks (distributed.py), so the ranks end with the rows one
    process would train from the same batch and seed. Only rank 0 writes the
    plot; a rank that loses the others stops with one error, the weights as
    they were.

    Raises VocabxferError before any weight changes for bad settings
    (``steps < 1``, ...), CorpusError for too few passages or none holding a
    trained row's token, ModelError for a teacher of another architecture
    or a tokenizer that does not fit its model.
    """
    started = time.perf_counter()
    check_settings(steps=steps, seconds=seconds,
                   lr=DEFAULT_LR["words"] if lr is None else lr, batch_size=batch_size,
                   max_length=max_length, trainable=trainable, precision=precision,
                   layers=layers, seed=seed, objective=objective, optimizer=optimizer,
                   align=align)
    plot_path = check_plot_path(plot) if plot is not None else None
    ranks = distributed.current()
    if batch_size < ranks.world:
        raise VocabxferError(f"refine: batch_size {batch_size} is smaller than the "
                             f"{ranks.world} ranks of the job; expected at least one passage "
                             "per rank (batch_size is the global batch)")
    passages = read_texts(texts)
    if len(passages) < MIN_PASSAGES:
        raise CorpusError(f"refine: the corpus has {len(passages)} passage(s) with text; "
                          f"expected at least {MIN_PASSAGES}")
    device = resolve_device(device)
    if device is not None and is_sharded(model):
        raise ModelError("refine: the model's body is sharded (shard_body) and placed "
                         "already; pass device=None")
    teacher_rows = teacher_embeddings(source_model, model)
    embedding = model.get_input_embeddings()
    check_model(model, embedding, teacher_rows, layers)
    objective = choose_objective(model, objective)
    lr = DEFAULT_LR[objective] if lr is None else lr
    source_vocab, target_vocab = load_vocab(source_tokenizer), load_vocab(target_tokenizer)
    check_fits(source_vocab, teacher_rows.shape[0], embeddings="the source embeddings",
               op="refine: ")
    check_fits(target_vocab, embedding.weight.shape[0], which="target",
               embeddings="the target embeddings", op="refine: ")
    if teacher_rows.shape[1] != embedding.weight.shape[1]:
        raise ModelError(f"refine: the teacher's embeddings are {teacher_rows.shape[1]} wide but "
                         f"the student's {embedding.weight.shape[1]}; expected the same model")
    trained_ids = trainable_rows(source_vocab, target_vocab, mode, trainable)
    if not trained_ids.numel():
        raise VocabxferError("refine: every target row was copied from the source, so no row "
                             "is left to refine; pass trainable='all' to refine them all")
    # Which token ids are trained rows: the pool counts them per passage
    # (the loss reads the same from the trained rows' slots).
    is_trained = torch.zeros(len(target_vocab), dtype=torch.bool)
    is_trained[trained_ids] = True
    pool_size = max(POOL_PER_DRAW * steps * batch_size, MIN_POOL) if steps else BUDGET_POOL
    pool = PassagePool(passages, source_vocab, target_vocab, is_trained, max_length,
                       pool_size=pool_size, seed=seed, with_source=objective == "words",
                       align=align)

    if device is not None:
        model.to(device)
    device = embedding.weight.device
    if steps is None and seconds is None:
        seconds = default_seconds(objective, device)
    pool.to(device)
    teacher_rows = teacher_rows.to(device=device, dtype=embedding.weight.dtype)
    output = model.get_output_embeddings() if objective == "next-token" else None
    tied = output is not None and output.weight is embedding.weight
    trained = trained_parameters(embedding, None if tied else output, trained_ids, device)
    body = body_of(model)
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    # On a GPU the step runs as one CUDA graph (graphed_step.py); the
    # learning rate is then a device tensor the graph reads.
    graphed = CUDA_GRAPHS and pool.fixed_shape and can_capture(model, device, ranks.world)
    rate = torch.tensor(float(lr), device=device) if graphed else None
    optimizer = make_optimizer(optimizer, objective, trained, lr if rate is None else rate)
    bf16 = precision == "bfloat16" or (precision == "auto" and fast_bf16(device))

    def one_step(picks: torch.Tensor) -> torch.Tensor:
        """One step on the passages `picks`; gives the batch's loss (on the
        device: read later, with StepLosses)."""
        batch = pool.batch(picks)
        # No cast cache: the frozen body's weights are recast every pass
        # anyway (autocast caches only leaves that require grad), and a
        # CUDA graph capture refuses the cache.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16,
                            cache_enabled=False):
            if objective == "words":
                total, count = word_loss(batch, body, embedding.weight.detach(), trained,
                                         teacher_rows, layers)
            else:
                total, count = next_token_loss(batch, body, embedding.weight.detach(), trained,
                                               output, tied)
        both = distributed.sum_across(
            ranks, torch.stack([total.detach().float(), count.detach().float()]))
        global_count = both[1].clamp(min=1e-6)  # words (or tokens) of the global batch
        loss = total / global_count
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.sum_gradients(ranks, trained.parameters())
        optimizer.step()
        return both[0] / global_count

    result = Refinement(steps=0, trained_rows=int(trained_ids.numel()), objective=objective)
    horizon = Horizon(steps, None if seconds is None else started + seconds)
    result.setup_seconds = time.perf_counter() - started
    try:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        model.eval()  # no dropout: the student should match a deterministic teacher
        bar = tqdm(total=steps, desc="refine", unit="step", disable=not show_progress)
        losses = StepLosses(trained.parameters(), lr, bar)
        picks = pool.picks(batch_size, ranks.share)  # every rank: the same global batches
        step = GraphedStep(one_step) if graphed else one_step
        with attention_for_training(device):
            while True:
                progress = horizon.progress(result.steps)
                if seconds is not None:  # the clocks differ: rank 0 decides
                    progress = distributed.agree(ranks, progress, device)
                if progress >= 1:
                    break
                if rate is not None:
                    rate.fill_(lr * (1 - progress))
                else:
                    for group in optimizer.param_groups:
                        group["lr"] = lr * (1 - progress)
                losses.add(step(next(picks)))  # read every few steps
                result.steps += 1
            losses.read()
        bar.close()
        result.losses = losses.values
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(requires_grad[name])
        model.train(was_training)
    result.seconds = time.perf_counter() - started
    if plot_path is not None and ranks.writes:
        result.plot = plot_losses(result.losses, plot_path, objective)
    # The weights last: whatever failed before left the model as it was.
    with torch.no_grad():
        written = [(embedding.weight, trained.rows)]
        if output is not None:
            written += [(output.weight, trained.output_rows), (output.bias, trained.output_bias)]
        for table, rows in written:
            if rows is not None:
                table.index_copy_(0, trained.ids, rows.detach().to(table.dtype))
    return result


def default_seconds(objective: str, device: torch.device) -> float:
    """The time budget of a run given neither steps nor seconds."""
    return DEFAULT_SECONDS[objective]["cpu" if device.type == "cpu" else "accelerator"]


def make_optimizer(name: str, objective: str, trained: Trained,
                   lr: Union[float, torch.Tensor]) -> Any:
    """``row-adam`` (lazy Adam: a row moves only when its token is read) or
    torch's ``adam``; ``auto`` picks by objective (see DEFAULT_OPTIMIZER).
    A tensor `lr` (a CUDA graph's) makes torch's Adam capturable."""
    if name == "auto":
        name = DEFAULT_OPTIMIZER[objective]
    if name == "row-adam":
        return RowAdam(trained.parameters(), lr=lr)
    return torch.optim.Adam(trained.parameters(), lr=lr,
                            capturable=isinstance(lr, torch.Tensor))


def choose_objective(model: Any, objective: str) -> str:
    """``auto``: next-token for a causal language model, words otherwise."""
    causal = is_causal_lm(model)
    if objective == "auto":
        return "next-token" if causal else "words"
    if objective == "next-token" and not causal:
        raise ModelError(f"refine: the next-token objective needs a causal language model "
                         f"with a linear output layer; {type(model).__name__} is not one "
                         "(use objective='words')")
    return objective


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


def check_settings(*, steps: Optional[int], seconds: Optional[float], lr: float,
                   batch_size: int, max_length: int, trainable: str, precision: str,
                   layers: Sequence[int], seed: int, objective: str = "auto",
                   optimizer: str = "auto", align: str = DEFAULT_ALIGN) -> None:
    """Refuse bad settings before anything is read or changed."""
    for name, value, choices in (("optimizer", optimizer, OPTIMIZERS), ("align", align, ALIGNS),
                                 ("objective", objective, OBJECTIVES),
                                 ("trainable", trainable, TRAINABLE),
                                 ("precision", precision, PRECISIONS)):
        if value not in choices:
            raise VocabxferError(f"refine: {name} {value!r} is not one of "
                                 f"{', '.join(choices)}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("max_length", max_length)):
        if name == "steps" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise VocabxferError(f"refine: {name} must be a positive int, got {value!r}")
    if max_length < MIN_MAX_LENGTH:
        raise VocabxferError(f"refine: max_length is {max_length}, which leaves no token to "
                             "learn from beside a passage's special tokens; expected at least "
                             f"{MIN_MAX_LENGTH}")
    if seconds is not None and not (isinstance(seconds, (int, float)) and
                                    not isinstance(seconds, bool) and math.isfinite(seconds)
                                    and seconds > 0):
        raise VocabxferError(f"refine: seconds must be a positive, finite number, got "
                             f"{seconds!r}")
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr)
            and 0 < lr <= MAX_LR):
        raise VocabxferError(f"refine: lr must be a finite number in (0, {MAX_LR:g}], got "
                             f"{lr!r}")
    if (isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers or
            not all(isinstance(layer, int) and not isinstance(layer, bool) for layer in layers)):
        raise VocabxferError(f"refine: layers must be a non-empty sequence of layer numbers "
                             f"(ints, -1 the last), got {layers!r}")
    check_seed(seed, "refine: ")


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


PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "webp", "tif", "tiff", "eps", "ps")


def check_plot_path(plot: Union[str, os.PathLike]) -> Path:
    """Where the loss curve will go, checked before any step: a file
    (not a folder) whose suffix names an image format matplotlib writes,
    in a place a file can be created."""
    path = output_path(plot)
    suffix = path.suffix.lower().lstrip(".")
    if path.is_dir():
        raise VocabxferError(f"refine: the plot path {path} is a folder; expected a file name "
                             "such as loss.png")
    if suffix not in PLOT_FORMATS:
        raise VocabxferError(f"refine: the plot path {path} has no image suffix matplotlib "
                             f"writes; expected one of .{', .'.join(PLOT_FORMATS)}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise VocabxferError("refine: plotting the loss needs matplotlib (pip install "
                             "matplotlib)") from None
    check_writable_place(path, "refine: the plot path")
    return path


def attention_for_training(device: torch.device):
    """On a CPU, SDPA's math backend: its backward is plain matmuls, while
    the fused CPU kernel's backward took 27% of a step (a step is 20% faster
    without it). On a CUDA GPU the fused kernels but cuDNN's: on an H200
    (torch 2.11) it planned anew for each batch shape (2.8 ms of host time
    a call), and with fixed shapes and CUDA graphs 500 MiniLM-sized steps
    still took 3.0 s with it and 2.4 s without (benchmarks/results/gpu)."""
    if device.type == "cpu":
        return sdpa_kernel([SDPBackend.MATH])
    if device.type == "cuda":
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                            SDPBackend.MATH])
    return contextlib.nullcontext()


def fast_bf16(device: torch.device) -> bool:
    """Whether the device multiplies bfloat16 natively: a GPU that supports
    it, or a CPU with AVX512-BF16 or AMX (measured here: 2.8x float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def trainable_rows(source: Any, target: Any, mode: str, trainable: str) -> torch.Tensor:
    """The target rows that train: all, or those the transfer did not copy."""
    if trainable == "all":
        return torch.arange(len(target))
    token_map = match_vocab(source, target, mode=mode)
    role_targets, _, _ = special_by_role(token_map, token_map.unmatched_target_ids.tolist())
    copied = torch.zeros(len(target), dtype=torch.bool)
    copied[token_map.target_ids] = True
    copied[torch.tensor(role_targets, dtype=torch.int64)] = True
    return (~copied).nonzero().squeeze(1)


def plot_losses(losses: List[float], path: Path, objective: str = "words") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(range(1, len(losses) + 1), losses, color="#1f4e99", linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel({"words": "word-alignment loss (cosine distance)",
                     "next-token": "next-token loss (nats per token)"}[objective])
    axis.set_yscale("log")
    axis.set_title("vocabxfer refine: student against teacher", fontsize=10)
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    try:
        write_file(path, lambda staging: figure.savefig(staging, dpi=120,
                                                        format=path.suffix.lstrip(".").lower()))
    finally:
        plt.close(figure)
    return path
