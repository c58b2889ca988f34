"""A few minutes of embedding-only distillation after the transfer: the
transferred model (the student) reads a passage with the target tokenizer,
the source model (the teacher, frozen) reads the same passage with the
source tokenizer, and the student's new embedding rows learn to make its
hidden states, pooled word by word, match the teacher's.

Words are aligned by character spans (the tokenizers' offsets), never by
re-tokenising strings. Teacher and student run the same transformer body,
held once: the teacher differs only by its input embeddings, which are fed
as ``inputs_embeds``. Only the student's embedding rows train (by default
those the transfer did not copy, which stay bit-exact otherwise); a tied
output layer follows them.
"""

import contextlib
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from .atomic import output_path, write_file
from .devices import DeviceLike, resolve_device
from .errors import CorpusError, ModelError, VocabxferError
from .initialise import special_by_role
from .matching import match_vocab
from .model import check_fits, check_seed
from .readers import VocabSource, load_vocab
from .saving import as_transformers_tokenizer
from .training import corpus_paths, iter_passages

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
DEFAULT_STEPS = 500
DEFAULT_LR = 5e-3
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 32
TRAINABLE = ("new", "all")
# Adam moves a row by about lr per step: past 1, embedding rows of norm ~1
# are thrown far out and the loss turns to NaN; refused up front.
MAX_LR = 1.0
PRECISIONS = ("auto", "float32", "bfloat16")
MIN_PASSAGES = 8
# Words with no trained row's token still teach (through attention), but
# less. On the manual pages' validation split, weighting them 0.3 (against
# 1 for words holding one) beat weighting all words alike by 0.0006-0.0007
# mean cosine in both settings tried; 0 (ignoring them) did not. Small, at
# the size of the seed's noise, but never worse.
UNTRAINED_WORD_WEIGHT = 0.3
# Passages tokenised to choose from: a few times what the run reads.
POOL_PER_DRAW, MIN_POOL = 4, 10_000
WORD = re.compile(r"\S+")
# Passages are cut to this many words per token of max_length before any
# tokenising: a word gives at least one token, so the cut never shortens
# what is read, and a passage of 12,000 words costs what one of 128 does.
WORDS_PER_TOKEN = 4

Texts = Union[Sequence[str], str, os.PathLike, Sequence[Union[str, os.PathLike]]]


@dataclass
class Refinement:
    """What refine did: steps, the loss at each, which rows trained, time."""

    steps: int
    trained_rows: int
    losses: List[float] = field(default_factory=list)
    seconds: float = 0.0
    plot: Optional[Path] = None

    def __str__(self) -> str:
        # Means over up to 10 steps at each end, never overlapping, so that
        # a short run still shows where it started and ended.
        window = max(1, min(10, len(self.losses) // 2))
        first = sum(self.losses[:window]) / max(1, len(self.losses[:window]))
        last = sum(self.losses[-window:]) / max(1, len(self.losses[-window:]))
        text = (f"refined {self.trained_rows:,} embedding rows for {self.steps} steps in "
                f"{self.seconds:.0f} s; word-alignment loss {first:.4f} -> {last:.4f}")
        return text + (f"; loss curve in {self.plot}" if self.plot else "")


def read_texts(texts: Texts) -> List[str]:
    """Passages: a list of strings as they are (blank ones left out), or the
    lines of text files (one path, or a list of paths). A list of strings
    that all name existing files is read as files: passages that are file
    names are implausible, and training on the names would fail silently."""
    if isinstance(texts, (str, os.PathLike)) or (
            texts and all(isinstance(text, os.PathLike) or
                          (isinstance(text, str) and os.path.isfile(text)) for text in texts)):
        return list(iter_passages(corpus_paths(texts)))
    if not all(isinstance(text, str) for text in texts):
        raise CorpusError("refine: texts must be passages (strings) or paths to text files")
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


def word_pooling(texts: List[str], encoding: Any, tokens: int) -> Tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """(pooling, present): pooling[b, w, t] averages the tokens of word w of
    text b (whitespace-separated, by character span); present[b, w] says the
    word has tokens (truncation can cut it off)."""
    # Plain lists, and one scatter at the end: walking tensors element by
    # element showed as 8% of a step under the profiler.
    all_offsets, all_special = (
        value.tolist() if isinstance(value, torch.Tensor) else value
        for value in (encoding["offset_mapping"], encoding["special_tokens_mask"]))
    # Only the words the (truncated) tokens reach: the pooling's size must
    # follow max_length, not the length of the passage.
    reach = [max((end for (_, end), special in zip(offsets, specials) if not special),
                 default=0) for offsets, specials in zip(all_offsets, all_special)]
    words = [[match.span() for match in WORD.finditer(text, 0, end)]
             for text, end in zip(texts, reach)]
    width = max(1, max(len(spans) for spans in words))
    hits: List[Tuple[int, int, int]] = []
    for b, spans in enumerate(words):
        w = 0
        for t, ((start, end), is_special) in enumerate(zip(all_offsets[b], all_special[b])):
            if is_special or end <= start:
                continue
            while w < len(spans) and spans[w][1] <= start:
                w += 1
            if w < len(spans) and spans[w][0] < end:
                hits.append((b, w, t))
    pooling = torch.zeros(len(texts), width, tokens)
    if hits:
        pooling[tuple(torch.tensor(hits).t())] = 1.0
    counts = pooling.sum(-1, keepdim=True)
    return pooling / counts.clamp(min=1), counts[..., 0] > 0


def first_words(text: str, count: int) -> str:
    """The text up to the end of its `count`-th word, as written."""
    for number, match in enumerate(WORD.finditer(text), 1):
        if number == count:
            return text[:match.end()]
    return text


class TrainedTokenSampler:
    """Draws passages for refinement so that every occurrence of a trained
    row's token is equally likely to be read: a passage is drawn with
    probability proportional to how many of its first `max_length` target
    tokens are trained rows. Passages with none are never drawn: they give
    the trained rows no gradient (a fifth of the Unix manual pages'
    passages). On the manual pages' validation split this lifted 500 steps
    from 0.9458 to 0.9489 mean cosine.

    Only a random pool of at most `pool_size` passages is tokenised up
    front, so that a huge corpus costs no more than the run can read."""

    def __init__(self, passages: List[str], tokenizer: Any, is_trained: torch.Tensor,
                 max_length: int, pool_size: int, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        if len(passages) > pool_size:
            chosen = torch.randperm(len(passages), generator=self.generator)[:pool_size]
            passages = [passages[i] for i in sorted(chosen.tolist())]
        passages = [first_words(passage, WORDS_PER_TOKEN * max_length) for passage in passages]
        counts = torch.zeros(len(passages))
        for start in range(0, len(passages), 4096):  # bounded memory for a large pool
            ids = tokenizer(passages[start:start + 4096], truncation=True,
                            max_length=max_length)["input_ids"]
            lengths = torch.tensor([len(row) for row in ids])
            flat = torch.tensor([i for row in ids for i in row], dtype=torch.int64)
            owner = torch.repeat_interleave(torch.arange(len(ids)), lengths)
            counts[start:start + len(ids)] = torch.zeros(len(ids)).index_add_(
                0, owner, is_trained[flat].float())
        keep = counts.nonzero().squeeze(1)
        if not keep.numel():
            raise CorpusError(f"refine: none of the {len(passages):,} passages read has a token "
                              "whose row is being refined (within its first "
                              f"{max_length} tokens), so refinement would learn nothing; "
                              "expected a corpus in the target tokenizer's domain")
        self.passages = [passages[i] for i in keep.tolist()]
        self.weights = counts[keep]

    def draw(self, batch_size: int) -> List[str]:
        picks = torch.multinomial(self.weights, min(batch_size, len(self.passages)),
                                  replacement=False, generator=self.generator)
        return [self.passages[i] for i in picks.tolist()]


def refine(model: Any, source_model: Any, source_tokenizer: VocabSource,
           target_tokenizer: VocabSource, texts: Texts, *, steps: int = DEFAULT_STEPS,
           lr: float = DEFAULT_LR, batch_size: int = DEFAULT_BATCH_SIZE,
           device: DeviceLike = None, trainable: str = "new", mode: str = "exact",
           layers: Sequence[int] = (-1,), max_length: int = DEFAULT_MAX_LENGTH, seed: int = 0,
           precision: str = "auto", show_progress: bool = True,
           plot: Optional[Union[str, os.PathLike]] = None) -> Refinement:
    """Refine the transferred `model` (changed in place) against the source
    model it came from, on `texts` (passages, or text files of one passage
    per line).

    `source_model` is the teacher: the source model itself (only its input
    embeddings are used: teacher and student share the body, held once), or
    its input embedding matrix. Each step reads `batch_size` passages with
    both tokenizers (truncated to `max_length` tokens) and turns the
    student's word vectors (its hidden states at ``layers``, mean-pooled over
    each word's tokens, words aligned by character span) towards the
    teacher's (cosine distance); Adam, `lr` decaying linearly to 0.
    Passages are drawn in proportion to how many trained rows' tokens they
    hold within `max_length` (those with none teach nothing and are never
    drawn). The forward passes run in bfloat16 autocast where the device
    computes it fast (``precision="auto"``: a GPU with bf16, a CPU with
    AVX512-BF16 or AMX), else in float32; the trained rows stay float32.
    Only embedding rows train: with ``trainable="new"`` (default) the rows
    the transfer did not copy (found by matching as ``mode`` did), which
    leaves the copied rows bit-exact; with ``"all"``, every row. A tied
    output layer follows. The loss shows on a tqdm bar; `plot` writes its
    curve to a PNG (matplotlib). ``seed`` fixes which passages are drawn.

    Raises VocabxferError before any weight changes for bad settings
    (``steps < 1``, ...), CorpusError for too few passages or none holding a
    trained row's token, ModelError for a teacher of another architecture
    or a tokenizer that does not fit its model.
    """
    check_settings(steps=steps, lr=lr, batch_size=batch_size, max_length=max_length,
                   trainable=trainable, precision=precision, layers=layers, seed=seed)
    plot_path = check_plot_path(plot) if plot is not None else None
    passages = read_texts(texts)
    if len(passages) < MIN_PASSAGES:
        raise CorpusError(f"refine: the corpus has {len(passages)} passage(s) with text; "
                          f"expected at least {MIN_PASSAGES}")
    device = resolve_device(device)
    teacher_rows = teacher_embeddings(source_model, model)
    embedding = model.get_input_embeddings()
    check_model(model, embedding, teacher_rows, layers)
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
    source_wrapped = as_transformers_tokenizer(source_vocab)
    target_wrapped = as_transformers_tokenizer(target_vocab)
    # Which token ids are trained rows: the sampler counts them per passage,
    # the loss weighs the words that hold them.
    is_trained = torch.zeros(len(target_vocab), dtype=torch.bool)
    is_trained[trained_ids] = True
    sampler = TrainedTokenSampler(passages, target_wrapped, is_trained, max_length,
                                  pool_size=max(POOL_PER_DRAW * steps * batch_size, MIN_POOL),
                                  seed=seed)

    if device is not None:
        model.to(device)
    device = embedding.weight.device
    teacher_rows = teacher_rows.to(device=device, dtype=embedding.weight.dtype)
    trained_ids = trained_ids.to(device)
    is_trained = is_trained.to(device)
    body = body_of(model)
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    rows = embedding.weight.detach()[trained_ids].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([rows], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    bf16 = precision == "bfloat16" or (precision == "auto" and fast_bf16(device))
    result = Refinement(steps=steps, trained_rows=int(trained_ids.numel()))
    started = time.perf_counter()
    try:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        model.eval()  # no dropout: the student should match a deterministic teacher
        bar = tqdm(range(steps), desc="refine", unit="step", disable=not show_progress)
        with attention_for_training(device):
            for step in bar:
                batch = sampler.draw(batch_size)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = distillation_loss(batch, body, embedding.weight.detach(), rows,
                                             trained_ids, is_trained, teacher_rows,
                                             source_wrapped, target_wrapped, layers,
                                             max_length, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                result.losses.append(loss.item())
                stop_if_diverged(result.losses[-1], rows, step, lr)
                bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
        bar.close()
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(requires_grad[name])
        model.train(was_training)
    result.seconds = time.perf_counter() - started
    if plot_path is not None:
        result.plot = plot_losses(result.losses, plot_path)
    # The weights last: whatever failed before left the model as it was.
    with torch.no_grad():
        embedding.weight.index_copy_(0, trained_ids, rows.detach())
    return result


def check_settings(*, steps: int, lr: float, batch_size: int, max_length: int, trainable: str,
                   precision: str, layers: Sequence[int], seed: int) -> None:
    """Refuse bad settings before anything is read or changed."""
    for name, value in (("steps", steps), ("batch_size", batch_size), ("max_length", max_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise VocabxferError(f"refine: {name} must be a positive int, got {value!r}")
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr)
            and 0 < lr <= MAX_LR):
        raise VocabxferError(f"refine: lr must be a finite number in (0, {MAX_LR:g}], got "
                             f"{lr!r}")
    if trainable not in TRAINABLE:
        raise VocabxferError(f"refine: trainable {trainable!r} is not one of "
                             f"{', '.join(TRAINABLE)}")
    if precision not in PRECISIONS:
        raise VocabxferError(f"refine: precision {precision!r} is not one of "
                             f"{', '.join(PRECISIONS)}")
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


def stop_if_diverged(loss: float, rows: torch.Tensor, step: int, lr: float) -> None:
    """Stop on a non-finite loss or trained row: the model's weights have
    not been touched yet (the trained rows are written back only at the
    end), so it is left exactly as it was."""
    if math.isfinite(loss) and bool(torch.isfinite(rows).all()):
        return
    raise VocabxferError(f"refine: the loss diverged at step {step + 1} (loss {loss}, lr "
                         f"{lr:g}); stopped with the model's weights as they were before "
                         "refine. Expected finite losses: try a smaller lr")


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
    return path


def attention_for_training(device: torch.device):
    """On a CPU, SDPA's math backend: its backward is plain matmuls, while
    the fused CPU kernel's backward took 27% of a step (a step is 20% faster
    without it). GPUs keep their fused kernels."""
    if device.type == "cpu":
        return sdpa_kernel([SDPBackend.MATH])
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


def encode(tokenizer: Any, texts: List[str], max_length: int, device: torch.device):
    encoding = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                         return_offsets_mapping=True, return_special_tokens_mask=True,
                         return_tensors="pt")
    pooling, present = word_pooling(texts, encoding, encoding["input_ids"].shape[1])
    return (encoding["input_ids"].to(device), encoding["attention_mask"].to(device),
            pooling.to(device), present.to(device))


def distillation_loss(texts: List[str], body: Any, student_table: torch.Tensor,
                      rows: torch.Tensor, trained_ids: torch.Tensor, is_trained: torch.Tensor,
                      teacher_table: torch.Tensor, source_tokenizer: Any,
                      target_tokenizer: Any, layers: Iterable[int], max_length: int,
                      device: torch.device) -> torch.Tensor:
    """Cosine distance between the student's and the teacher's word vectors,
    over words both sides read (words holding a trained row's token, by
    `is_trained[token id]`, weigh 1, others UNTRAINED_WORD_WEIGHT), averaged
    over `layers`."""
    source_ids, source_mask, source_pool, source_present = encode(
        source_tokenizer, texts, max_length, device)
    target_ids, target_mask, target_pool, target_present = encode(
        target_tokenizer, texts, max_length, device)
    with torch.no_grad():
        teacher = body(inputs_embeds=F.embedding(source_ids, teacher_table),
                       attention_mask=source_mask, output_hidden_states=True).hidden_states
    table = student_table.index_copy(0, trained_ids, rows)  # differentiable in `rows`
    student = body(inputs_embeds=F.embedding(target_ids, table), attention_mask=target_mask,
                   output_hidden_states=True).hidden_states
    words = min(source_pool.shape[1], target_pool.shape[1])
    both = (source_present[:, :words] & target_present[:, :words]).float()
    holds = is_trained[target_ids].to(target_pool.dtype).unsqueeze(-1)
    has_trained = (target_pool[:, :words] @ holds).squeeze(-1) > 0
    weights = both * torch.where(has_trained, 1.0, UNTRAINED_WORD_WEIGHT)
    losses = []
    for layer in layers:
        teacher_words = source_pool[:, :words] @ teacher[layer].float()
        student_words = target_pool[:, :words] @ student[layer].float()
        distance = 1 - F.cosine_similarity(student_words, teacher_words, dim=-1, eps=1e-6)
        losses.append((distance * weights).sum() / weights.sum().clamp(min=1e-6))
    return torch.stack(losses).mean()


def plot_losses(losses: List[float], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(range(1, len(losses) + 1), losses, color="#1f4e99", linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel("word-alignment loss (cosine distance)")
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
