"""step_losses: losses are read in groups, in order, and a non-finite loss
or trained row stops the run naming the step it happened at; and which
steps graphed_step may capture (the capture itself is tested on a GPU, in
test_refine_gpu.py)."""

import math

import pytest
import torch

from vocabxfer import VocabxferError
from vocabxfer.refinement.step_losses import StepLosses


class Bar:
    def __init__(self):
        self.updates, self.postfix = [], None

    def update(self, count):
        self.updates.append(count)

    def set_postfix(self, **values):
        self.postfix = values


def test_losses_are_read_every_few_steps_in_order():
    bar, rows = Bar(), torch.zeros(3, 2)
    losses = StepLosses([rows], lr=1e-3, bar=bar, read_every=4)
    for step in range(10):
        losses.add(torch.tensor(step / 10))
        assert len(losses.values) == 4 * ((step + 1) // 4)  # nothing read between groups
    losses.read()
    assert losses.values == pytest.approx([step / 10 for step in range(10)])
    assert bar.updates == [4, 4, 2] and bar.postfix == {"loss": "0.9000"}
    losses.read()  # nothing pending: nothing happens
    assert len(losses.values) == 10


def test_the_first_non_finite_loss_is_named_by_its_step():
    losses = StepLosses([torch.zeros(2)], lr=0.5, read_every=5)
    for value in (1.0, 0.9, 0.8, math.nan, 0.7):
        if value != 0.7:
            losses.add(torch.tensor(value))
    with pytest.raises(VocabxferError, match=r"diverged at step 4 \(loss nan, lr 0.5\)"):
        losses.read()


def test_a_non_finite_row_stops_the_run_even_with_finite_losses():
    rows = torch.zeros(3, 2)
    losses = StepLosses([rows], lr=1e-3, read_every=3)
    losses.add(torch.tensor(0.5))
    rows[1, 0] = math.inf
    losses.add(torch.tensor(0.4))
    with pytest.raises(VocabxferError, match=r"diverged at step 2 \(loss 0.4"):
        losses.read()


def test_only_a_model_wholly_on_one_gpu_of_one_process_is_captured():
    from vocabxfer.refinement.graphed_step import can_capture

    from .conftest import tiny_bert

    model = tiny_bert(10)
    assert not can_capture(model, torch.device("cpu"), 1)  # CUDA graphs need CUDA
    assert not can_capture(model, torch.device("cuda:0"), 1)  # its weights are elsewhere
    model.to("meta")  # an offloaded model's weights are not on the GPU either
    assert not can_capture(model, torch.device("cuda:0"), 1)
    assert not can_capture(model, torch.device("cuda:0"), 2)  # several ranks: eager
