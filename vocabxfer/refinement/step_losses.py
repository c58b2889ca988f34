"""The loss of every refinement step, kept on the device and read every few
steps. Reading a device value makes the host wait for the device: once a
step, it leaves the device idle while the host prepares the next step (on
an H200 most of a step). Read every READ_EVERY steps, the host runs ahead
and the device stays busy. The divergence check reads with the losses: the
weights are written back only after the last step, so finding a NaN a few
steps late still leaves the model as it was.
"""

import math
from typing import List, Optional, Sequence

import torch

from vocabxfer.errors import VocabxferError

READ_EVERY = 20


class StepLosses:
    """Collects each step's loss (a 0-d tensor) and reads them in groups,
    checking the losses and the trained rows are finite; ``values`` holds
    the losses read so far, as floats."""

    def __init__(self, trained: Sequence[torch.Tensor], lr: float, bar: Optional[object] = None,
                 read_every: int = READ_EVERY):
        self.trained, self.lr, self.bar, self.read_every = list(trained), lr, bar, read_every
        self.values: List[float] = []
        self.pending: List[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss.detach().float().reshape(()))
        if len(self.pending) >= self.read_every:
            self.read()

    def read(self) -> None:
        """Reads the pending losses (one wait for the device) and raises
        VocabxferError at the first non-finite one, or if a trained row
        is no longer finite."""
        if not self.pending:
            return
        rows_finite = torch.stack([torch.isfinite(rows).all() for rows in self.trained]).all()
        read = torch.cat([torch.stack(self.pending), rows_finite.float()[None]]).tolist()
        losses, rows_ok = read[:-1], read[-1] == 1.0
        self.pending.clear()
        for loss in losses:
            self.values.append(loss)
            if not math.isfinite(loss):
                self.diverged(loss)
        if not rows_ok:
            self.diverged(self.values[-1])
        if self.bar is not None:
            self.bar.update(len(losses))
            self.bar.set_postfix(loss=f"{self.values[-1]:.4f}")

    def diverged(self, loss: float) -> None:
        raise VocabxferError(f"refine: the loss diverged at step {len(self.values)} (loss {loss}, "
                             f"lr {self.lr:g}); stopped with the model's weights as they were "
                             "before refine. Expected finite losses: try a smaller lr")
