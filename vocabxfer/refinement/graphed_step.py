"""A refinement step replayed as one CUDA graph.

A step of refinement launches a thousand or more small kernels (two forward
passes of the body, a backward pass, the optimizer), each costing the host
a few microseconds of Python and driver time, while the device needs less
than that to run them at refinement's batch sizes: the device waits for the
host. Captured once as a CUDA graph, every later step is one launch.

Capture needs a step of fixed shapes that never waits for the device
(``passage_pool``'s fixed-shape batches, ``objectives.attention_mask``,
``step_losses``); a step that cannot be captured runs as it is, with a
warning, so a model that does something capture refuses still refines.
"""

import itertools
import logging
from typing import Callable, Optional

import torch

logger = logging.getLogger(__name__)

# Eager steps before capture, on a side stream as torch's documentation
# asks: they let cuBLAS, the autograd engine and the allocator set up.
WARMUP_STEPS = 3


def can_capture(model: torch.nn.Module, device: torch.device, world: int) -> bool:
    """Whether refine's step may be captured: a CUDA device, one process,
    and every weight and buffer of the model on that device. A model spread
    over several GPUs (``device_map``) or offloaded would run work outside
    the captured stream: captured once, skipped on replay, silently wrong."""
    if device.type != "cuda" or world != 1:
        return False
    return all(tensor.device == device
               for tensor in itertools.chain(model.parameters(), model.buffers()))


class GraphedStep:
    """Calls `step(picks) -> loss` eagerly for WARMUP_STEPS calls, then
    captures it into a CUDA graph and replays that for every later call,
    with the call's `picks` copied into the graph's own input. The loss
    returned is a fresh tensor each call (the graph's output is overwritten
    by the next replay)."""

    def __init__(self, step: Callable[[torch.Tensor], torch.Tensor],
                 warmup: int = WARMUP_STEPS):
        self.step, self.warmup, self.calls = step, warmup, 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.picks: Optional[torch.Tensor] = None
        self.loss: Optional[torch.Tensor] = None
        self.eager = False  # capture failed: run eagerly from then on
        self.side_stream = torch.cuda.Stream()

    def __call__(self, picks: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            self.picks.copy_(picks, non_blocking=True)
            self.graph.replay()
            return self.loss.clone()
        self.calls += 1
        if self.eager:
            return self.step(picks)
        if self.calls <= self.warmup:
            return self.on_side_stream(picks)
        self.capture(picks)
        if self.graph is None:
            return self.step(picks)
        self.graph.replay()  # capturing recorded the step but did not run it
        return self.loss.clone()

    def on_side_stream(self, picks: torch.Tensor) -> torch.Tensor:
        current = torch.cuda.current_stream()
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            loss = self.step(picks)
        current.wait_stream(self.side_stream)
        return loss

    def capture(self, picks: torch.Tensor) -> None:
        self.picks = picks.clone()
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        # The graph keeps its activations in a memory pool of its own: hand
        # back what the warm-up steps left cached, or a large model would
        # hold its activations twice.
        torch.cuda.empty_cache()
        try:
            with torch.cuda.graph(graph):
                self.loss = self.step(self.picks)
        except Exception as error:  # whatever the model does that capture refuses
            torch.cuda.synchronize()
            self.eager, self.loss = True, None
            logger.warning("refine: the step could not be captured as a CUDA graph (%s: %s); "
                           "running it step by step, slower", type(error).__name__, error)
            return
        self.graph = graph
