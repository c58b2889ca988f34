"""What refinement minimises, given one batch of the passage pool, and
everything that differs between objectives, in one ``Objective`` each:
its loss, its defaults (learning rate, optimizer, time budget), which side
of a passage it reads, whether it trains an untied head, and the fidelity
measure that judges it. Another objective is another ``Objective`` here.

- ``words`` (encoders): the student's word vectors (hidden states pooled
  over each word's tokens) against the teacher's, cosine distance.
- ``contrastive`` and ``similarity`` (encoders): the passages' relations
  rather than each word's vector: each student passage vector (mean-pooled
  as a sentence embedding) nearest the teacher's vector of the same passage
  among the batch's, or the student's cosine matrix over the batch against
  the teacher's; ``words+contrastive`` and ``words+similarity`` mix them.
- ``halves`` and ``words+halves`` (encoders): the job itself, learned on
  the domain's text: each passage is cut in two at a word, and the
  student's vector of each half must be nearest its other half's among the
  batch's (search, both ways). The distillation terms can at best reach the
  source model; this one learns the domain's search, and the word term
  beside it holds the rows near the source's meaning.
- ``next-token`` (causal language models): the student's next-token loss on
  the passages under the target tokenizer. The body stays frozen; the new
  input rows learn through it, the new output rows (the same rows when
  tied; an untied head's rows and biases otherwise) learn directly.

Only the trained rows are parameters; every other row is read from the
model's own tables, and nothing the size of the vocabulary by the width is
copied per step. Each loss is returned as (sum, count): the step divides
by the count of the whole global batch, so that data-parallel ranks
(distributed.py) sum to the gradient of one process.
"""

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from transformers import __version__ as transformers_version

from vocabxfer.refinement.passage_pool import (MIN_WORDS_PER_HALF, Batch, cut_in_half,
                                                first_words, pool_words)

# Words with no trained row's token still teach (through attention), but
# less. On the manual pages' validation split, weighting them 0.3 (against
# 1 for words holding one) beat weighting all words alike by 0.0006-0.0007
# mean cosine in both settings tried; 0 (ignoring them) did not. Small, at
# the size of the seed's noise, but never worse.
UNTRAINED_WORD_WEIGHT = 0.3
# Weight of a passage-level term: the cosine distance between the two
# sides' token-weighted means over the words both read (what a mean-pooled
# sentence embedding sees, where a word the source splits in three counts
# three times), each passage weighing as much as its words together.
SENTENCE_WEIGHT = 0.0
# In-batch contrastive distillation's temperature (cosine similarities).
CONTRASTIVE_TEMPERATURE = 0.05
# The logit of a pair with a passage too short to cut: exp() of it is 0.
UNPAIRED_LOGIT = -1e4
# Squared cosine differences are small numbers; Adam does not mind, but a
# mixture weighs them against the word term's cosine distances.
SIMILARITY_SCALE = 10.0
# A mixture's passage term against its word term.
MIX_WEIGHT = 1.0
# transformers 5 takes a 4-D attention mask as it is (masking_utils).
FOUR_D_MASKS = int(transformers_version.split(".")[0]) >= 5


def is_causal_lm(model: Any) -> bool:
    """A transformers causal language model: one whose class is registered
    for AutoModelForCausalLM and whose head is a linear output layer."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    get_output = getattr(model, "get_output_embeddings", None)
    return (type(model).__name__ in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) and
            callable(get_output) and isinstance(get_output(), torch.nn.Linear))


@dataclass
class Trained:
    """The rows that train: ``rows`` stands in for the input embeddings'
    rows ``slot >= 0`` (slot[id] is the row's place in it); an untied
    head has its own ``output_rows`` and ``output_bias`` for the same ids."""

    rows: torch.Tensor
    slot: torch.Tensor
    ids: torch.Tensor
    output_rows: Optional[torch.Tensor] = None
    output_bias: Optional[torch.Tensor] = None

    def parameters(self):
        return [tensor for tensor in (self.rows, self.output_rows, self.output_bias)
                if tensor is not None]


def student_embeddings(ids: torch.Tensor, table: torch.Tensor, trained: Trained) -> torch.Tensor:
    """The student's input vectors: the trained rows (differentiable) where
    the token is trained, the table's rows elsewhere."""
    token_slot = trained.slot[ids]
    rows = F.embedding(token_slot.clamp(min=0), trained.rows).to(table.dtype)
    return torch.where((token_slot >= 0)[..., None], rows, F.embedding(ids, table))


def attention_mask(body: Any, mask: torch.Tensor, fixed_shape: bool,
                   causal: bool = False) -> torch.Tensor:
    """The padding mask as the body should take it. Given a 2-D mask,
    transformers (5.x, SDPA attention) asks the device whether any token is
    padding before each forward pass, which makes the host wait for the
    device every step; a 4-D boolean mask (batch, 1, query, key) is taken
    as it is. Used for fixed-shape batches (an accelerator) under SDPA
    only: eager attention adds its mask as floats, and transformers 4's
    BERT refuses 4-D masks."""
    implementation = getattr(getattr(body, "config", None), "_attn_implementation", None)
    if not (fixed_shape and FOUR_D_MASKS and implementation == "sdpa"):
        return mask
    length = mask.shape[1]
    keys = mask.bool()[:, None, None, :]
    if causal:
        keys = keys & torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    return keys.expand(-1, 1, length, length)


def encoder_states(batch: Batch, body: Any, table: torch.Tensor, trained: Trained,
                   teacher_table: torch.Tensor) -> Tuple[Tuple[torch.Tensor, ...],
                                                         Tuple[torch.Tensor, ...]]:
    """(the teacher's hidden states, the student's) of the batch: the teacher
    reads the source side without gradients, the student the target side."""
    with torch.no_grad():
        teacher = body(inputs_embeds=F.embedding(batch.source_ids, teacher_table),
                       attention_mask=attention_mask(body, batch.source_mask, batch.fixed_shape),
                       output_hidden_states=True).hidden_states
    student = body(inputs_embeds=student_embeddings(batch.target_ids, table, trained),
                   attention_mask=attention_mask(body, batch.target_mask, batch.fixed_shape),
                   output_hidden_states=True).hidden_states
    return teacher, student


def word_loss(batch: Batch, trained: Trained, teacher: Sequence[torch.Tensor],
              student: Sequence[torch.Tensor],
              layers: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cosine distance between the student's and the teacher's word vectors,
    over words both sides read (words holding a trained row's token weigh
    1, others UNTRAINED_WORD_WEIGHT), averaged over `layers`: (the weighted
    sum of distances, the sum of the weights)."""
    width = batch.width
    holds = (trained.slot[batch.target_ids] >= 0).to(torch.float32)[..., None]
    trained_tokens, target_counts = pool_words(holds, batch.target_words, width)
    source_counts = pool_words(holds.new_zeros(batch.source_ids.shape + (1,)),
                               batch.source_words, width)[1]
    both = (source_counts > 0) & (target_counts > 0)
    weights = both * torch.where(trained_tokens[..., 0] > 0, 1.0, UNTRAINED_WORD_WEIGHT)
    sums = []
    for layer in layers:
        teacher_words, _ = pool_words(teacher[layer].float(), batch.source_words, width)
        student_words, _ = pool_words(student[layer].float(), batch.target_words, width)
        distance = 1 - F.cosine_similarity(student_words, teacher_words, dim=-1, eps=1e-6)
        total = (distance * weights).sum()
        if SENTENCE_WEIGHT:
            read = both.float()
            student_mean = (student_words * (target_counts * read)[..., None]).sum(1)
            teacher_mean = (teacher_words * (source_counts * read)[..., None]).sum(1)
            passage = 1 - F.cosine_similarity(student_mean, teacher_mean, dim=-1, eps=1e-6)
            total = total + SENTENCE_WEIGHT * (passage * read.sum(1)).sum()
        sums.append(total)
    return torch.stack(sums).mean(), weights.sum()


def passage_vectors(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit-length mean of each passage's token states over its attention
    mask (special tokens included): what a mean-pooled sentence embedding
    is."""
    weights = (mask > 0).float()[..., None]
    pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1)
    return F.normalize(pooled, dim=-1, eps=1e-6)


def contrastive_loss(student: torch.Tensor, teacher: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """In-batch contrastive distillation: each student passage vector must
    be nearer the teacher's vector of the same passage than the teacher's
    vectors of the batch's other passages (cross-entropy over the batch at
    CONTRASTIVE_TEMPERATURE): (its sum over passages, the passages)."""
    logits = student @ teacher.T / CONTRASTIVE_TEMPERATURE
    labels = torch.arange(len(student), device=student.device)
    return F.cross_entropy(logits, labels, reduction="sum"), student.new_tensor(len(student))


def similarity_loss(student: torch.Tensor, teacher: torch.Tensor
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Similarity-structure distillation: the student's cosine-similarity
    matrix over the batch's passages against the teacher's, squared
    difference over the pairs of different passages, scaled by
    SIMILARITY_SCALE: (its sum over passages of their mean over pairs,
    the passages)."""
    count = len(student)
    if count < 2:
        return student.sum() * 0, student.new_tensor(0.0)
    different = ~torch.eye(count, dtype=torch.bool, device=student.device)
    squared = (student @ student.T - teacher @ teacher.T).pow(2) * different
    return SIMILARITY_SCALE * squared.sum() / (count - 1), student.new_tensor(float(count))


def halves_loss(batch: Batch, body: Any, table: torch.Tensor,
                trained: Trained) -> Tuple[torch.Tensor, torch.Tensor]:
    """Search between the halves of the batch's passages, learned by the
    student alone: each query half's vector nearest its own document half's
    among the batch's documents, and each document nearest its own query
    (cross-entropy both ways at CONTRASTIVE_TEMPERATURE, over the passages
    long enough to cut): (its sum over those passages, their number). The
    job a sentence-embedding model is used for, on the domain's own text,
    where the distillation terms can only approach the source."""
    halves = batch.halves
    vectors = []
    for ids, mask in ((halves.query_ids, halves.query_mask),
                      (halves.document_ids, halves.document_mask)):
        hidden = body(inputs_embeds=student_embeddings(ids, table, trained),
                      attention_mask=attention_mask(body, mask, batch.fixed_shape)
                      ).last_hidden_state
        vectors.append(passage_vectors(hidden, mask))
    queries, documents = vectors
    paired = halves.paired
    logits = queries @ documents.T / CONTRASTIVE_TEMPERATURE
    # A passage too short to cut is neither a query nor a document. Finite,
    # not -inf: a row of -inf gives NaN gradients even where its label is
    # ignored.
    logits = logits.masked_fill(~(paired[:, None] & paired[None, :]), UNPAIRED_LOGIT)
    labels = torch.arange(len(queries), device=queries.device).masked_fill(~paired, -100)
    total = (F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") +
             F.cross_entropy(logits.T, labels, ignore_index=-100, reduction="sum")) / 2
    count = paired.sum().float()
    # No passage to cut: a zero that keeps the graph (and its shapes) whole.
    return torch.where(count > 0, total, total.new_zeros(())), count


@dataclass(frozen=True)
class Mix:
    """How much each term of an encoder objective weighs: word (or span)
    vectors, in-batch contrastive passages, passage similarity structure,
    search between passage halves. The passage terms are means per passage,
    weighed against the word term's mean per word."""

    words: float = 1.0
    contrastive: float = 0.0
    similarity: float = 0.0
    halves: float = 0.0

    @property
    def reads_source(self) -> bool:
        """Whether a term compares with the teacher (the source model)."""
        return bool(self.words or self.contrastive or self.similarity)


def encoder_loss(batch: Batch, body: Any, table: torch.Tensor, trained: Trained,
                 teacher_table: torch.Tensor, layers: Sequence[int],
                 mix: Mix) -> Tuple[torch.Tensor, torch.Tensor]:
    """The encoder objective `mix` weighs: (its sum, what it is summed
    over: words when the word term is in it, else passages)."""
    total, count = None, None

    def add(weight: float, term: Tuple[torch.Tensor, torch.Tensor]) -> None:
        nonlocal total, count
        if total is None:
            total, count = weight * term[0], term[1]
        else:  # a mean per passage, weighed as one per word
            total = total + weight * term[0] * count / term[1].clamp(min=1)

    if mix.reads_source:
        teacher, student = encoder_states(batch, body, table, trained, teacher_table)
        if mix.words:  # first, so the sum is over words
            add(mix.words, word_loss(batch, trained, teacher, student, layers))
        for weight, term in ((mix.contrastive, contrastive_loss),
                             (mix.similarity, similarity_loss)):
            if weight:
                add(weight, term(passage_vectors(student[-1], batch.target_mask),
                                 passage_vectors(teacher[-1], batch.source_mask)))
    if mix.halves:
        add(mix.halves, halves_loss(batch, body, table, trained))
    return total, count


def next_token_loss(batch: Batch, body: Any, table: torch.Tensor, trained: Trained,
                    output: torch.nn.Linear,
                    tied: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """The student's next-token cross-entropy (nats) over the batch's target
    tokens: (its sum, the number of tokens predicted). Logits of the trained
    ids come from the trained rows; the others from the model's head as it
    is."""
    # No cache: nothing is generated, and building one costs every forward pass.
    hidden = body(inputs_embeds=student_embeddings(batch.target_ids, table, trained),
                  attention_mask=attention_mask(body, batch.target_mask, batch.fixed_shape,
                                                causal=True),
                  use_cache=False).last_hidden_state[:, :-1]
    logits = F.linear(hidden, output.weight.detach(),
                      None if output.bias is None else output.bias.detach())
    trained_rows = trained.rows if tied else trained.output_rows
    bias = None if trained.output_bias is None else trained.output_bias.to(hidden.dtype)
    trained_logits = F.linear(hidden, trained_rows.to(hidden.dtype), bias)
    index = trained.ids.view(1, 1, -1).expand(*hidden.shape[:2], -1)
    logits = logits.scatter(-1, index, trained_logits.to(logits.dtype))
    labels = batch.target_ids[:, 1:].masked_fill(batch.target_mask[:, 1:] == 0, -100)
    total = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                            reduction="sum")
    return total, (labels != -100).sum().float()


# ---- the objectives ----------------------------------------------------------------

@dataclass(frozen=True)
class Objective:
    """One objective, whole. Its defaults were chosen on validation
    passages (never the ones the benchmarks evaluate on):

    - the encoder objectives: a cosine word loss beat squared distance, 32
      passages of 32 tokens beat 16 of 64 at the same cost (and 64 tokens
      did not help search), torch's Adam decaying linearly to 0. The
      learning rate was chosen by the job, search between passage halves
      (benchmarks/quality/eval_quality.py --objectives, the 3-minute CPU
      budget, Python's documentation): at 5e-3, which word cosine had chosen,
      no validation check ever beat the zero-shot start; 1e-3 and 3e-4 both
      raised validation MRR, 1e-3 more (0.4135 and 0.4102, from 0.4123).
    - ``next-token``: 1e-3 and the lazy row Adam (SmolLM2-135M on the manual
      pages' validation passages, benchmarks/eval_lm.py --tune).

    Without steps or seconds a run lasts the time budget fitted to the
    hardware at hand: an encoder 3 minutes of a 2-core CPU or 30 s of a
    GPU, a causal LM 10 minutes or 60 s."""

    name: str
    loss_name: str
    loss_axis: str
    default_lr: float
    default_optimizer: str
    default_seconds: Dict[str, float]  # "cpu" and "accelerator"
    reads_source_side: bool  # the teacher reads each passage too
    reads_halves: bool  # each passage also cut into a query and its document
    trains_output: bool  # an untied head's rows train beside the input rows
    fidelity_measure: str
    # The rows that train when the settings do not say: "new" (those the
    # transfer did not copy, which stay bit-exact) or "all".
    default_trainable: str = "new"
    # Passages set aside to check the job measure during a run (keep_best.py):
    # an encoder's search is cheap to score, a causal LM's loss is not.
    validation_passages: int = 300

    def seconds_for(self, device: torch.device) -> float:
        """The time budget of a run given neither steps nor seconds."""
        return self.default_seconds["cpu" if device.type == "cpu" else "accelerator"]

    def loss(self, batch: Batch, body: Any, table: torch.Tensor, trained: Trained, *,
             teacher_rows: torch.Tensor, layers: Sequence[int],
             output: Optional[torch.nn.Linear],
             tied: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """(the batch's summed loss, what it is summed over)."""
        raise NotImplementedError


@dataclass(frozen=True)
class EncoderObjective(Objective):
    mix: Mix = Mix()

    def loss(self, batch, body, table, trained, *, teacher_rows, layers, output, tied):
        return encoder_loss(batch, body, table, trained, teacher_rows, layers, self.mix)


@dataclass(frozen=True)
class NextTokenObjective(Objective):
    def loss(self, batch, body, table, trained, *, teacher_rows, layers, output, tied):
        return next_token_loss(batch, body, table, trained, output, tied)


def encoder_objective(name: str, mix: Mix, loss_name: str,
                      loss_axis: Optional[str] = None) -> EncoderObjective:
    # Search learned on the domain moves every row, the copied ones too: on
    # Python's documentation (validation passages, 3-minute budget, lr 1e-3,
    # two runs of eval_quality.py --objectives) training all rows reached
    # MRR 0.5210, the new rows alone 0.4473.
    return EncoderObjective(
        name=name, loss_name=loss_name, loss_axis=loss_axis or loss_name, default_lr=1e-3,
        default_optimizer="adam", default_seconds={"cpu": 180.0, "accelerator": 30.0},
        reads_source_side=mix.reads_source, reads_halves=bool(mix.halves), trains_output=False,
        fidelity_measure="word cosine", mix=mix,
        default_trainable="all" if mix.halves else "new")


OBJECTIVES: Dict[str, Objective] = {
    "words": encoder_objective("words", Mix(), "word-alignment loss",
                               "word-alignment loss (cosine distance)"),
    "contrastive": encoder_objective("contrastive", Mix(words=0, contrastive=1),
                                     "in-batch contrastive loss"),
    "similarity": encoder_objective("similarity", Mix(words=0, similarity=1),
                                    "similarity-structure loss"),
    "words+contrastive": encoder_objective("words+contrastive",
                                           Mix(words=1, contrastive=MIX_WEIGHT),
                                           "word-alignment + contrastive loss"),
    "words+similarity": encoder_objective("words+similarity",
                                          Mix(words=1, similarity=MIX_WEIGHT),
                                          "word-alignment + similarity-structure loss"),
    "halves": encoder_objective("halves", Mix(words=0, halves=1), "halves search loss"),
    "words+halves": encoder_objective("words+halves", Mix(words=1, halves=MIX_WEIGHT),
                                      "word-alignment + halves search loss"),
    "next-token": NextTokenObjective(
        name="next-token", loss_name="next-token loss",
        loss_axis="next-token loss (nats per token)", default_lr=1e-3,
        default_optimizer="row-adam", default_seconds={"cpu": 600.0, "accelerator": 60.0},
        reads_source_side=False, reads_halves=False, trains_output=True,
        fidelity_measure="bpb ratio",
        validation_passages=64),
}
# Chosen by the job on validation passages (results/quality_objectives.md):
# search learned on the domain's halves beat every distillation objective
# on both corpora, and the source model itself.
ENCODER_DEFAULT = "halves"
# ... where at least this share of the corpus's passages (of the first
# HALVES_SAMPLE) can be cut in two; the word objective otherwise.
HALVES_MIN_SHARE = 0.5
HALVES_SAMPLE = 2000
OBJECTIVE_NAMES = ("auto",) + tuple(OBJECTIVES)


def cuttable_share(passages: Sequence[str], sample: int = HALVES_SAMPLE) -> float:
    """The share of (the first `sample` of) the passages long enough to cut
    into two halves of MIN_WORDS_PER_HALF words."""
    sample_passages = passages[:sample]
    if not sample_passages:
        return 0.0
    # Past the words two halves need, a passage's length does not matter.
    enough = 2 * MIN_WORDS_PER_HALF
    return sum(cut_in_half(first_words(passage, enough)) is not None
               for passage in sample_passages) / len(sample_passages)


def objective_for(model: Any, name: str = "auto",
                  passages: Optional[Sequence[str]] = None) -> Objective:
    """``auto``: next-token for a causal language model; for an encoder,
    ENCODER_DEFAULT where at least HALVES_MIN_SHARE of the `passages` are
    long enough to cut in halves (a corpus of short lines, or of text
    without spaces, has too few queries to learn search from), the word
    objective otherwise. A named objective the model cannot learn is
    refused."""
    from vocabxfer.errors import ModelError

    causal = is_causal_lm(model)
    if name == "auto":
        if causal:
            return OBJECTIVES["next-token"]
        default = OBJECTIVES[ENCODER_DEFAULT]
        if default.reads_halves and passages is not None and \
                cuttable_share(passages) < HALVES_MIN_SHARE:
            return OBJECTIVES["words"]
        return default
    if name == "next-token" and not causal:
        raise ModelError(f"refine: the next-token objective needs a causal language model "
                         f"with a linear output layer; {type(model).__name__} is not one "
                         "(use an encoder objective, such as 'words')")
    return OBJECTIVES[name]
