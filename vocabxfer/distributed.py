"""Refinement inside a torch.distributed job (torchrun, accelerate launch):
which rank this process is, its share of a batch, and the few collectives
a data-parallel step needs, all through torch.distributed itself. Without
an initialised process group everything here is a no-op for one process.

A step's loss is a sum over words (or tokens) divided by how many there
are in the whole global batch, so that the gradients all-reduced (summed)
across ranks equal those of one process reading the same batch.
"""

import os
from dataclasses import dataclass
from typing import List

import torch

from .errors import VocabxferError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1

    @property
    def writes(self) -> bool:
        """Only rank 0 writes results, plots and reports."""
        return self.rank == 0

    def share(self, picks: torch.Tensor) -> torch.Tensor:
        """This rank's passages of a global batch."""
        return picks[self.rank::self.world]


def current() -> Ranks:
    """The rank and world size of the initialised process group, or one
    process alone."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ


def join_launched_job(device: torch.device) -> None:
    """Under torchrun, join its process group if the caller has not already:
    NCCL when every process has a GPU of its own, gloo otherwise (on the
    CPU, or several processes sharing a GPU, which NCCL refuses)."""
    dist = torch.distributed
    if not launched_by_torchrun() or dist.is_initialized():
        return
    own_gpu = (device.type == "cuda"
               and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) <= torch.cuda.device_count())
    if own_gpu:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if own_gpu else "gloo")


def lost_contact(ranks: Ranks, error: BaseException) -> VocabxferError:
    return VocabxferError(f"refine: rank {ranks.rank} of {ranks.world} lost contact with the "
                          f"other ranks ({type(error).__name__}: {str(error)[:300]}); stopped "
                          "with the model's weights as they were before refine")


def sum_across(ranks: Ranks, values: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `values` over every rank (itself alone in a
    one-process job)."""
    if ranks.world == 1:
        return values
    try:
        torch.distributed.all_reduce(values)
    except RuntimeError as error:
        raise lost_contact(ranks, error) from None
    return values


def sum_gradients(ranks: Ranks, parameters: List[torch.Tensor]) -> None:
    """Sum every trained tensor's gradient across ranks, in one collective."""
    if ranks.world == 1:
        return
    grads = [parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
             for parameter in parameters]
    flat = sum_across(ranks, torch.cat([grad.reshape(-1) for grad in grads]))
    offset = 0
    for parameter, grad in zip(parameters, grads):
        parameter.grad = flat[offset:offset + grad.numel()].view_as(grad)
        offset += grad.numel()


def agree(ranks: Ranks, value: float, device: torch.device) -> float:
    """Rank 0's value, on every rank (when to stop a timed run)."""
    if ranks.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    try:
        torch.distributed.broadcast(tensor, src=0)
    except RuntimeError as error:
        raise lost_contact(ranks, error) from None
    return float(tensor)
