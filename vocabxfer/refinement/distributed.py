"""Refinement inside a torch.distributed job (torchrun, accelerate launch):
which rank this process is, its share of a batch, and the few collectives
a data-parallel step needs, all through torch.distributed itself. Without
an initialised process group everything here is a no-op for one process.

A step's loss is a sum over words (or tokens) divided by how many there
are in the whole global batch, so that the gradients all-reduced (summed)
across ranks equal those of one process reading the same batch.
"""

import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Dict, List

import torch

from vocabxfer.errors import VocabxferError

# How long a collective waits for a peer before the job fails: long enough
# for a slow rank to tokenise its pool, far below torch's 30 minutes.
DEFAULT_TIMEOUT_SECONDS = 300.0


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


def join_launched_job(device: torch.device,
                      timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Under torchrun, join its process group if the caller has not already:
    NCCL when every process has a GPU of its own, gloo otherwise (on the
    CPU, or several processes sharing a GPU, which NCCL refuses). A
    collective that waits longer than `timeout_seconds` for a peer (one
    stopped, or gone) fails, and the job ends with one error, instead of
    torch's default of 30 minutes."""
    dist = torch.distributed
    if not launched_by_torchrun() or dist.is_initialized():
        return
    if not (isinstance(timeout_seconds, (int, float)) and not isinstance(timeout_seconds, bool)
            and 0 < timeout_seconds < 10 ** 7):
        raise VocabxferError(f"the distributed timeout is {timeout_seconds!r} seconds; expected "
                             "a positive number")
    own_gpu = (device.type == "cuda"
               and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) <= torch.cuda.device_count())
    if own_gpu:
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if own_gpu else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_seconds))
    except RuntimeError as error:  # a peer that never came (stopped, or gone)
        raise VocabxferError(f"could not join the distributed job of {os.environ['WORLD_SIZE']} "
                             f"processes within {timeout_seconds:g} s "
                             f"({type(error).__name__}: {str(error)[:300]}); every rank must "
                             "start (--dist-timeout sets how long to wait)") from None


def in_a_job() -> bool:
    """Whether this process has joined a process group."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def fingerprint(value: object) -> int:
    """A setting as a signed 64-bit number that is the same on every rank
    for the same value (repr of plain values; never Python's salted hash)."""
    digest = hashlib.sha256(repr(value).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little", signed=True)


def check_agreement(ranks: Ranks, settings: Dict[str, object]) -> None:
    """Every rank must run with rank 0's settings (steps, budget, seed, the
    tokenizers, the corpus...): ranks that differ would deadlock, abort in
    a collective of another size, or train on each other's held-out
    passages. One collective of a fixed size compares them; every rank
    raises the same error naming the settings that differ."""
    if ranks.world == 1:
        return
    names = sorted(settings)
    # NCCL moves CUDA tensors only; gloo takes CPU ones.
    device = (torch.device("cuda", torch.cuda.current_device())
              if torch.distributed.get_backend() == "nccl" else torch.device("cpu"))
    mine = torch.tensor([fingerprint(settings[name]) for name in names], dtype=torch.int64,
                        device=device)
    gathered = [torch.empty_like(mine) for _ in range(ranks.world)]
    try:
        torch.distributed.all_gather(gathered, mine)
    except RuntimeError as error:
        raise lost_contact(ranks, error, "before refine") from None
    differing = {name: [rank for rank in range(1, ranks.world)
                        if int(gathered[rank][position]) != int(gathered[0][position])]
                 for position, name in enumerate(names)}
    differing = {name: others for name, others in differing.items() if others}
    if differing:
        described = "; ".join(f"{name} (rank{'s' if len(others) > 1 else ''} "
                              f"{', '.join(map(str, others))} "
                              f"differ{'' if len(others) > 1 else 's'} from rank 0)"
                              for name, others in differing.items())
        raise VocabxferError(f"the ranks of this job were given different settings: "
                             f"{described}; every rank must be given the same command line "
                             "and the same files")


def lost_contact(ranks: Ranks, error: BaseException,
                 when: str = "with the model's weights as they were before refine"
                 ) -> VocabxferError:
    return VocabxferError(f"refine: rank {ranks.rank} of {ranks.world} lost contact with the "
                          f"other ranks ({type(error).__name__}: {str(error)[:300]}); stopped "
                          f"{when} (a peer that is stopped or gone ends the job after the "
                          "distributed timeout, --dist-timeout)")


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
