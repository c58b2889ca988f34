"""How far a run is through its steps or its time budget."""

import time
from typing import Optional


class Horizon:
    """How far refinement is through its steps or its time budget, from 0
    to 1 (whichever is further): the learning rate decays over it, and the
    run ends at 1. A budget always allows one step."""

    def __init__(self, steps: Optional[int], deadline: Optional[float]):
        self.steps, self.deadline = steps, deadline
        self.loop_start = time.perf_counter()

    def progress(self, done: int) -> float:
        fractions = [done / self.steps] if self.steps else []
        if self.deadline is not None:
            span = max(self.deadline - self.loop_start, 1e-9)
            fractions.append(0.0 if done == 0 else (time.perf_counter() - self.loop_start) / span)
        return max(fractions)
