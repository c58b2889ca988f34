"""Refinement never leaves the model worse at its job than it started.

Before the first step, validation passages are set aside from the corpus
(never drawn for a step). Every so often during the run, and at its end,
the moved model's job measure is taken on them (an encoder: search between
the passages' halves, MRR; a causal LM: its next-token loss); the best rows
seen, the zero-shot start included, are the ones the run keeps.
"""

import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from vocabxfer.refinement.fidelity import encode, passage_nats
from vocabxfer.refinement.objectives import Objective
from vocabxfer.refinement.retrieval import halves, search
from vocabxfer.vocabularies.vocab import Vocab


@dataclass
class Check:
    """One validation check: after `step` steps, the job's score
    (higher is better: MRR, or minus the loss in nats per token)."""

    step: int
    score: float


@dataclass
class Kept:
    """What the checks found: every check, and the step whose rows were kept."""

    measure: str
    passages: int
    checks: List[Check] = field(default_factory=list)
    kept_step: Optional[int] = None
    seconds: float = 0.0  # the checks' share of the run's time
    share_limit: Optional[float] = None  # set when fewer checks fit the time budget

    @property
    def start(self) -> Optional[Check]:
        return self.checks[0] if self.checks else None

    def __str__(self) -> str:
        if not self.checks:
            return ""
        kept = next(check for check in self.checks if check.step == self.kept_step)
        cost = f"; {len(self.checks)} checks took {self.seconds:.0f} s"
        if self.share_limit is not None:
            cost += f", as many as fit {self.share_limit:.0%} of the time budget"
        if self.kept_step == 0:
            return (f"no check on {self.passages} validation passages beat the zero-shot start "
                    f"({self.measure} {self.format(self.start.score)}); kept the start" + cost)
        return (f"kept the rows of step {self.kept_step} ({self.measure} "
                f"{self.format(self.start.score)} -> {self.format(kept.score)} on "
                f"{self.passages} validation passages{cost})")

    def format(self, score: float) -> str:
        return f"{score:.4f}" if self.measure == "MRR" else f"{-score:.4f}"


def job_score(objective: Objective, vocab: Vocab, passages: Sequence[str]
              ) -> Tuple[str, int, Callable[[Any], float]]:
    """(the measure's name, how many items it reads, the score of a
    model): search MRR between the passages' halves for an encoder, minus
    the next-token loss per token for a causal LM."""
    if objective.fidelity_measure == "bpb ratio":
        side = encode(vocab, list(passages), "target")
        tokens = float(side.lengths.sum())

        def score(model: Any) -> float:
            return -float(passage_nats(model, side, vocab).sum()) / max(tokens, 1.0)

        return "next-token loss", len(passages), score
    queries, documents = halves(passages)

    def score(model: Any) -> float:
        return search(model, vocab, queries, documents).mrr

    return "MRR", len(queries), score


class BestRows:
    """The trained rows with the best validation score seen so far."""

    def __init__(self, trained: Sequence[torch.Tensor],
                 write: Callable[[List[torch.Tensor]], None], measure: str, passages: int,
                 score: Callable[[Any], float], model: Any):
        self.trained = list(trained)
        self.write, self.score, self.model = write, score, model
        self.kept = Kept(measure=measure, passages=passages)
        self.best: Optional[List[torch.Tensor]] = None
        self.best_score = float("-inf")

    def check(self, step: int) -> None:
        """Scores the rows as they are now (written into the model's
        tables, where the job measure reads them); keeps them if best."""
        started = time.perf_counter()
        rows = [tensor.detach() for tensor in self.trained]
        self.write(rows)
        value = self.score(self.model)
        self.kept.checks.append(Check(step, value))
        self.kept.seconds += time.perf_counter() - started
        if value > self.best_score:  # ties keep the earlier rows
            self.best_score, self.kept.kept_step = value, step
            self.best = [tensor.clone() for tensor in rows]

    def rows(self) -> List[torch.Tensor]:
        return self.best
