"""How a refinement runs: one frozen object, checked once, where it is made,
so that a bad setting is refused before anything is read or changed, and
every part of the run reads the same settings."""

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

from vocabxfer.errors import VocabxferError
from vocabxfer.models.in_memory import check_seed
from vocabxfer.refinement.objectives import OBJECTIVE_NAMES
from vocabxfer.refinement.plotting import check_plot_path

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 32
TRAINABLE = ("new", "all")
OPTIMIZERS = ("auto", "row-adam", "adam")
# What the word objective aligns: whole words, or the smallest pieces of
# text both tokenizations cut alike (passage_pool.shared_cuts), with or
# without the special tokens. On the validation passages (MiniLM, 500 steps
# or the 3-minute budget) spans+specials beat words by 0.002 on Python's
# documentation and by 0.0001-0.0005 on the manual pages, never worse.
ALIGNS = ("words", "spans", "spans+specials")
DEFAULT_ALIGN = "spans+specials"
PRECISIONS = ("auto", "float32", "bfloat16")
# Adam moves a row by about lr per step: past 1, embedding rows of norm ~1
# are thrown far out and the loss turns to NaN; refused up front.
MAX_LR = 1.0
# [CLS] and [SEP] (or a start token) take two slots; a word needs the rest.
MIN_MAX_LENGTH = 4
# Each check costs seconds of a budget of minutes.
MAX_CHECKS = 100


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class RefineSettings:
    """A refinement's settings. ``steps`` or ``seconds`` (a time budget; with
    both, whichever ends first; with neither, the objective's default
    budget for the device). ``lr``: the objective's default where None.
    Each step reads ``batch_size`` passages cut to ``max_length`` tokens.
    ``trainable``: the rows the transfer did not copy ("new") or all; None:
    the objective's choice.
    ``layers``: hidden states the word objective compares. ``seed``: which
    passages are drawn. ``precision``: bfloat16 autocast where the device
    computes it fast ("auto"), or as named. ``objective``: "auto" (by the
    model) or one named in objectives.OBJECTIVES ("words", "halves",
    "next-token", ...). ``optimizer``: "auto" (the
    objective's), "row-adam" or "adam". ``align``: what the word objective
    aligns. ``plot``: a PNG (or other image) of the loss curve.
    ``keep_share``: the share of each batch drawn from the text to keep
    (refine's `keep`, when given: a causal LM's new output rows then learn
    to stay out of another domain's predictions). ``checks``: how often the
    job measure is taken on validation passages set aside from the corpus
    (at the start, then every 1/checks of the run, and at its end; in a
    time budget, fewer when they would take more than loop.CHECK_SHARE of
    it); the best rows seen are kept, the start included (0: no checks,
    the last rows are kept).

    Raises VocabxferError when made with a bad value."""

    steps: Optional[int] = None
    seconds: Optional[float] = None
    lr: Optional[float] = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_length: int = DEFAULT_MAX_LENGTH
    trainable: Optional[str] = None
    layers: Tuple[int, ...] = (-1,)
    seed: int = 0
    precision: str = "auto"
    objective: str = "auto"
    optimizer: str = "auto"
    align: str = DEFAULT_ALIGN
    plot: Optional[Union[str, Path]] = None
    show_progress: bool = True
    keep_share: float = 0.25
    checks: int = 4

    def __post_init__(self) -> None:
        for name, choices in (("optimizer", OPTIMIZERS), ("align", ALIGNS),
                              ("objective", OBJECTIVE_NAMES), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise VocabxferError(f"refine: {name} {getattr(self, name)!r} is not one of "
                                     f"{', '.join(choices)}")
        if self.trainable is not None and self.trainable not in TRAINABLE:
            raise VocabxferError(f"refine: trainable {self.trainable!r} is not one of "
                                 f"{', '.join(TRAINABLE)}, or None (the objective's choice)")
        if not isinstance(self.checks, int) or isinstance(self.checks, bool) or \
                not 0 <= self.checks <= MAX_CHECKS:
            raise VocabxferError(f"refine: checks must be an int from 0 to {MAX_CHECKS}, got "
                                 f"{self.checks!r}")
        for name in ("steps", "batch_size", "max_length"):
            value = getattr(self, name)
            if name == "steps" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise VocabxferError(f"refine: {name} must be a positive int, got {value!r}")
        if self.max_length < MIN_MAX_LENGTH:
            raise VocabxferError(f"refine: max_length is {self.max_length}, which leaves no "
                                 "token to learn from beside a passage's special tokens; "
                                 f"expected at least {MIN_MAX_LENGTH}")
        if self.seconds is not None and not (_is_number(self.seconds) and
                                             math.isfinite(self.seconds) and self.seconds > 0):
            raise VocabxferError(f"refine: seconds must be a positive, finite number, got "
                                 f"{self.seconds!r}")
        if self.lr is not None and not (_is_number(self.lr) and math.isfinite(self.lr)
                                        and 0 < self.lr <= MAX_LR):
            raise VocabxferError(f"refine: lr must be a finite number in (0, {MAX_LR:g}], got "
                                 f"{self.lr!r}")
        if not (_is_number(self.keep_share) and 0 <= self.keep_share < 1):
            raise VocabxferError(f"refine: keep_share must be a number in [0, 1), got "
                                 f"{self.keep_share!r}")
        layers = self.layers
        if (isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers
                or not all(isinstance(layer, int) and not isinstance(layer, bool)
                           for layer in layers)):
            raise VocabxferError(f"refine: layers must be a non-empty sequence of layer numbers "
                                 f"(ints, -1 the last), got {layers!r}")
        object.__setattr__(self, "layers", tuple(layers))
        check_seed(self.seed, "refine: ")
        if self.plot is not None:
            object.__setattr__(self, "plot", check_plot_path(self.plot))

    @classmethod
    def from_options(cls, settings: Optional["RefineSettings"],
                     options: dict) -> "RefineSettings":
        """The settings given, or ones made of keyword options (not both)."""
        if settings is not None and options:
            raise VocabxferError(f"refine: give a RefineSettings or keyword options "
                                 f"({', '.join(sorted(options))}), not both")
        if settings is not None:
            if not isinstance(settings, cls):
                raise VocabxferError(f"refine: settings must be a RefineSettings, got a "
                                     f"{type(settings).__name__}")
            return settings
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"refine() got unexpected keyword argument(s) {', '.join(unknown)}; "
                            f"the settings are {', '.join(sorted(known))}")
        return cls(**options)
