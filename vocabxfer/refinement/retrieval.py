"""The job a sentence-embedding model is used for, measured: search.

Each held-out passage is cut in half at a word; the first half is a query,
the second a document. A model embeds both with its own tokenizer (mean
of the last hidden states over every token, special tokens included, as
sentence-transformers pools; then unit length) and, for each query, ranks
all the documents by cosine. Reported: recall@1 (the query's own second
half comes first) and MRR (the mean of 1 / its rank), and the difference of
two models with a paired bootstrap interval over the queries, since both
read the same queries.
"""

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from vocabxfer.refinement.passage_pool import cut_in_half, encode_side, gather, rust_tokenizer
from vocabxfer.vocabularies.vocab import Vocab

MAX_TOKENS, BATCH = 256, 32
RESAMPLES = 2000


def halves(passages: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(queries, documents): each passage of at least two halves'
    worth of words cut at its middle word, keeping its own spacing."""
    queries, documents = [], []
    for passage in passages:
        cut = cut_in_half(passage)
        if cut is not None:
            queries.append(cut[0])
            documents.append(cut[1])
    return queries, documents


@torch.no_grad()
def embed(model: Any, vocab: Vocab, texts: Sequence[str], what: str = "target") -> torch.Tensor:
    """Unit-length mean-pooled last hidden states of `texts`, (texts, width),
    float32 on the CPU. Batches hold texts of similar length."""
    from vocabxfer.refinement.loop import body_of

    side = encode_side(rust_tokenizer(vocab, MAX_TOKENS, what), list(texts), MAX_TOKENS)
    body, device = body_of(model), model.get_input_embeddings().weight.device
    order = torch.argsort(side.lengths, stable=True)
    rows = torch.zeros(len(texts), model.get_input_embeddings().weight.shape[1])
    was_training = model.training
    model.eval()
    try:
        for chosen in order.split(BATCH):
            ids, mask, _ = gather(side, chosen)
            hidden = body(input_ids=ids.to(device),
                          attention_mask=mask.to(device)).last_hidden_state.float().cpu()
            weights = mask[..., None].float()
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
            rows[chosen] = F.normalize(pooled, dim=-1)
    finally:
        model.train(was_training)
    return rows


@dataclass
class Ranks:
    """Per query: 1.0 where its own document came first, and 1 / its rank."""

    hits: torch.Tensor
    reciprocal: torch.Tensor

    @property
    def recall(self) -> float:
        return float(self.hits.mean()) if len(self.hits) else 0.0

    @property
    def mrr(self) -> float:
        return float(self.reciprocal.mean()) if len(self.reciprocal) else 0.0


def search(model: Any, vocab: Vocab, queries: Sequence[str], documents: Sequence[str],
           what: str = "target") -> Ranks:
    """Each query ranks every document; document i is query i's answer.
    Ties count against the query (its document ranks after every equal)."""
    query_vectors = embed(model, vocab, queries, what)
    document_vectors = embed(model, vocab, documents, what)
    scores = query_vectors @ document_vectors.T
    own = scores.diagonal()[:, None]
    others_at_least = (scores >= own).sum(1) - 1
    rank = 1 + others_at_least.float()
    return Ranks(hits=(rank == 1).float(), reciprocal=1.0 / rank)


def paired_interval(first: torch.Tensor, second: torch.Tensor, seed: int = 0
                    ) -> Tuple[float, float, float]:
    """The mean of first - second over paired items, with its 95% bootstrap
    interval (items resampled with replacement, RESAMPLES times)."""
    difference = (first - second).double()
    if not len(difference):
        return 0.0, 0.0, 0.0
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(difference), (RESAMPLES, len(difference)), generator=generator)
    means = difference[picks].mean(1).sort().values
    return (float(difference.mean()), float(means[int(0.025 * RESAMPLES)]),
            float(means[int(0.975 * RESAMPLES) - 1]))


@dataclass
class Retrieval:
    """The job measure of an encoder's transfer, for the fidelity report:
    recall@1 and MRR of the source model (its own tokenizer) and of the
    moved model (the target's), zero-shot and refined, with the MRR
    differences and their 95% paired bootstrap intervals."""

    queries: int
    source_recall: float
    source_mrr: float
    zero_shot_recall: float
    zero_shot_mrr: float
    zero_shot_vs_source: Tuple[float, float, float]
    refined_recall: Optional[float] = None
    refined_mrr: Optional[float] = None
    refined_vs_source: Optional[Tuple[float, float, float]] = None
    refined_vs_zero_shot: Optional[Tuple[float, float, float]] = None

    def __str__(self) -> str:
        def interval(figures: Tuple[float, float, float]) -> str:
            return f"{figures[0]:+.4f} [{figures[1]:+.4f}, {figures[2]:+.4f}]"

        text = (f"search between the halves of {self.queries} held-out passages "
                f"(recall@1 / MRR): source {self.source_recall:.3f} / {self.source_mrr:.4f}; "
                f"zero-shot {self.zero_shot_recall:.3f} / {self.zero_shot_mrr:.4f} "
                f"(MRR vs source {interval(self.zero_shot_vs_source)})")
        if self.refined_mrr is not None:
            text += (f"; refined {self.refined_recall:.3f} / {self.refined_mrr:.4f} (MRR vs "
                     f"source {interval(self.refined_vs_source)}, vs zero-shot "
                     f"{interval(self.refined_vs_zero_shot)})")
        return text


class RetrievalProbe:
    """The source model's search on the held-out passages' halves, taken
    before the transfer changes the model; then the moved model's."""

    def __init__(self, model: Any, source: Vocab, passages: Sequence[str]):
        self.queries, self.documents = halves(passages)
        self.source = search(model, source, self.queries, self.documents, "source")
        self.zero_shot: Optional[Ranks] = None

    def __len__(self) -> int:
        return len(self.queries)

    def report(self, model: Any, target: Vocab) -> Retrieval:
        """The zero-shot figures (call before refinement)."""
        self.zero_shot = search(model, target, self.queries, self.documents)
        return Retrieval(queries=len(self.queries), source_recall=self.source.recall,
                         source_mrr=self.source.mrr, zero_shot_recall=self.zero_shot.recall,
                         zero_shot_mrr=self.zero_shot.mrr,
                         zero_shot_vs_source=paired_interval(self.zero_shot.reciprocal,
                                                             self.source.reciprocal))

    def add_refined(self, retrieval: Retrieval, model: Any, target: Vocab) -> None:
        refined = search(model, target, self.queries, self.documents)
        retrieval.refined_recall, retrieval.refined_mrr = refined.recall, refined.mrr
        retrieval.refined_vs_source = paired_interval(refined.reciprocal, self.source.reciprocal)
        retrieval.refined_vs_zero_shot = paired_interval(refined.reciprocal,
                                                         self.zero_shot.reciprocal)
