"""How close the moved model stays to its source, on passages that no step
trained on: what a user would otherwise have to write an evaluation for.

- An encoder: the mean cosine between the source model's and the moved
  model's word vectors (last hidden states, mean-pooled over each
  whitespace word's tokens, words aligned by character span).
- A causal language model: its bits per byte (BPB) over the source
  model's, each reading the passage under its own tokenizer after its
  start-of-text token (or its end-of-text one), so that every byte of the
  passage is predicted by both. BPB is also the job such a model does.

An encoder's job is search (what a sentence-embedding model is used for),
so its report also has ``retrieval.py``'s measure on the same passages: the
source and the moved model each search between the passages' halves with
their own tokenizer. Cosine to the source is a proxy; search is the job.

Both also give the token ratio: target tokens over source tokens on the
same passages. The source side is measured before the transfer changes the
model (``FidelityProbe``), the moved model after it, and again after
refinement.
"""

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F

from vocabxfer.refinement.objectives import objective_for
from vocabxfer.refinement.passage_pool import (Side, encode_side, gather, longest_token,
                                               pool_words, rust_tokenizer, within_reach)
from vocabxfer.refinement.retrieval import Retrieval, RetrievalProbe
from vocabxfer.vocabularies.vocab import Vocab

# Fewer queries than this say nothing about search.
MIN_QUERIES = 20
# Enough text to judge a word's context, short enough that both tokenizers
# read all of it within MAX_TOKENS (passages they would cut are left out).
WORDS_PER_PASSAGE, MAX_TOKENS, BATCH = 48, 192, 16
REPORT_FILE = "vocabxfer_fidelity.json"


@dataclass
class OtherDomain:
    """Text of another domain, read by a model whose vocabulary was
    extended: the share of its passages the new tokenizer reads exactly as
    the source's did, and the same measure as on the domain's passages."""

    passages: int
    identical: float
    zero_shot: float
    refined: Optional[float] = None

    def __str__(self) -> str:
        text = (f"on {self.passages} passages of another domain: {self.identical:.1%} "
                f"tokenized as before; {self.zero_shot:.4f} zero-shot")
        return text + (f", {self.refined:.4f} refined" if self.refined is not None else "")


@dataclass
class Fidelity:
    """The figures of one transfer: the measure, the passages it read, the
    token ratio, the zero-shot figure and, after refinement, the refined
    one (cosine: higher is closer; BPB ratio: 1 is the source)."""

    measure: str
    passages: int
    token_ratio: float
    zero_shot: float
    refined: Optional[float] = None
    source_bpb: Optional[float] = None
    other: Optional[OtherDomain] = None
    job: Optional[Retrieval] = None  # an encoder's search

    def __str__(self) -> str:
        name = {"word cosine": "word-vector cosine to the source",
                "bpb ratio": "bits per byte over the source's"}[self.measure]
        text = f"fidelity on {self.passages} held-out passages: {name} {self.zero_shot:.4f}"
        text += " zero-shot" + (f", {self.refined:.4f} refined" if self.refined else "")
        text += f"; target tokens {self.token_ratio:.3f}x the source's"
        text += f"\n  {self.job}" if self.job is not None else ""
        return text + (f"\n  {self.other}" if self.other is not None else "")

    def to_json(self) -> str:
        """Strict JSON: a figure that is not finite (a model with NaN
        weights) is written as null, and `finite` says so, since bare NaN
        is not JSON and strict parsers refuse it."""
        def strict(value: Any) -> Any:
            if isinstance(value, dict):
                return {name: strict(inner) for name, inner in value.items()}
            if isinstance(value, (list, tuple)):
                return [strict(inner) for inner in value]
            return None if isinstance(value, float) and not math.isfinite(value) else value

        def all_finite(value: Any) -> bool:
            if isinstance(value, dict):
                return all(all_finite(inner) for inner in value.values())
            if isinstance(value, (list, tuple)):
                return all(all_finite(inner) for inner in value)
            return not isinstance(value, float) or math.isfinite(value)

        figures = asdict(self)
        finite = all_finite(figures)
        figures = strict(figures)
        figures["finite"] = finite
        return json.dumps(figures, indent=2, allow_nan=False) + "\n"


def encode(vocab: Vocab, texts: List[str], what: str) -> Side:
    return encode_side(rust_tokenizer(vocab, MAX_TOKENS, what), texts, MAX_TOKENS)


class FidelityProbe:
    """The source model's side of the comparison, taken before the transfer
    changes the model: its word vectors (an encoder) or its BPB (a causal
    LM) on the held-out passages."""

    def __init__(self, model: Any, source: Vocab, passages: List[str],
                 other_passages: Optional[List[str]] = None, search: bool = True):
        longest = longest_token(source)
        texts = [within_reach(text, WORDS_PER_PASSAGE, MAX_TOKENS, longest)
                 for text in passages]
        source_side = encode(source, texts, "source")
        fits = source_side.lengths < MAX_TOKENS
        self.texts = [text for text, keep in zip(texts, fits.tolist()) if keep]
        self.source = source_side.select(fits.nonzero().squeeze(1))
        self.measure_name = objective_for(model).fidelity_measure
        self.causal = self.measure_name == "bpb ratio"
        self.bytes = torch.tensor([len(text.encode("utf-8")) for text in self.texts],
                                  dtype=torch.float64)
        self.search: Optional[RetrievalProbe] = None
        if self.causal:
            self.source_nats = passage_nats(model, self.source, source)
            self.source_bpb = bits_per_byte(self.source_nats, self.bytes)
        else:
            self.teacher = word_vectors(model, self.source)
            if search:
                probe = RetrievalProbe(model, source, passages)
                self.search = probe if len(probe) >= MIN_QUERIES else None
        # Text of another domain (an extension's): the same figure there,
        # and the share of it the target tokenizer reads as before.
        self.other = FidelityProbe(model, source, other_passages, search=False) \
            if other_passages is not None else None

    def measure(self, model: Any, target: Vocab) -> Tuple[float, float]:
        """(the figure, the token ratio) of the moved model, over the
        passages the target tokenizer also reads whole (a cut passage would
        count bytes it never predicted)."""
        target_side = encode(target, self.texts, "target")
        whole = target_side.lengths < MAX_TOKENS
        ratio = (int(target_side.lengths[whole].sum()) /
                 max(int(self.source.lengths[whole].sum()), 1))
        if self.causal:
            nats = passage_nats(model, target_side, target)
            return (bits_per_byte(nats[whole], self.bytes[whole]) /
                    bits_per_byte(self.source_nats[whole], self.bytes[whole])), ratio
        student = word_vectors(model, target_side)
        sums, count = 0.0, 0
        for (teacher, teacher_counts), (moved, moved_counts) in zip(self.teacher, student):
            width = min(teacher.shape[1], moved.shape[1])
            both = (teacher_counts[:, :width] > 0) & (moved_counts[:, :width] > 0)
            cosines = F.cosine_similarity(moved[:, :width], teacher[:, :width], dim=-1)
            sums += float(cosines[both].sum())
            count += int(both.sum())
        return sums / max(count, 1), ratio

    def identical_share(self, target: Vocab) -> float:
        """The share of the passages the target tokenizer reads as the
        source's did (the same ids, in the same number)."""
        target_side = encode(target, self.texts, "target")
        same = (target_side.lengths == self.source.lengths) & \
            (target_side.ids == self.source.ids).all(dim=1)
        return float(same.float().mean()) if len(self.texts) else 0.0

    def report(self, model: Any, target: Vocab) -> Fidelity:
        """The zero-shot report (before refinement)."""
        figure, ratio = self.measure(model, target)
        report = Fidelity(measure=self.measure_name,
                          passages=len(self.texts), token_ratio=ratio, zero_shot=figure,
                          source_bpb=self.source_bpb if self.causal else None,
                          job=self.search.report(model, target) if self.search else None)
        if self.other is not None:
            report.other = OtherDomain(passages=len(self.other.texts),
                                       identical=self.other.identical_share(target),
                                       zero_shot=self.other.measure(model, target)[0])
        return report

    def add_refined(self, report: Fidelity, model: Any, target: Vocab) -> None:
        """The refined figures, beside the zero-shot ones of `report`."""
        report.refined = self.measure(model, target)[0]
        if self.search is not None and report.job is not None:
            self.search.add_refined(report.job, model, target)
        if self.other is not None and report.other is not None:
            report.other.refined = self.other.measure(model, target)[0]


def batches(side: Side):
    for start in range(0, len(side.lengths), BATCH):
        rows = torch.arange(start, min(start + BATCH, len(side.lengths)))
        yield (rows, *gather(side, rows))


@torch.no_grad()
def word_vectors(model: Any, side: Side) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Per batch: each word's mean last hidden state and its token count."""
    from vocabxfer.refinement.loop import body_of

    body, device = body_of(model), model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    vectors = []
    try:
        for rows, ids, mask, words in batches(side):
            hidden = body(input_ids=ids.to(device), attention_mask=mask.to(device))
            width = int(side.word_counts[rows].max().clamp(min=1))
            means, counts = pool_words(hidden.last_hidden_state.float().cpu(), words, width)
            vectors.append((means, counts))
    finally:
        model.train(was_training)
    return vectors


@torch.no_grad()
def passage_nats(model: Any, side: Side, vocab: Vocab) -> torch.Tensor:
    """Each passage's next-token losses summed over every one of its tokens
    (nats, float64); each is read after the tokenizer's start-of-text (or
    end-of-text) token, whose own prediction is not counted."""
    start_id = vocab.id_of_role("bos")
    if start_id is None:
        start_id = vocab.id_of_role("eos")
    device = model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    totals = []
    try:
        for _, ids, mask, _ in batches(side):
            if start_id is not None and not bool((ids[:, 0] == start_id).all()):
                ids = torch.cat([torch.full((len(ids), 1), start_id), ids], 1)
                mask = torch.cat([torch.ones(len(mask), 1, dtype=mask.dtype), mask], 1)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100).to(device)
            losses = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels.flatten(),
                                     ignore_index=-100, reduction="none")
            totals.append(losses.view(len(ids), -1).double().sum(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(totals)


def bits_per_byte(nats: torch.Tensor, byte_counts: torch.Tensor) -> float:
    return float(nats.sum()) / math.log(2) / max(float(byte_counts.sum()), 1.0)
