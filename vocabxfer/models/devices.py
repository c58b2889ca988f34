"""The device a step runs on, checked before any long step starts."""

import os
from typing import Optional, Union

import torch

from vocabxfer.errors import VocabxferError

DeviceLike = Union[str, torch.device, None]


def resolve_device(device: DeviceLike) -> Optional[torch.device]:
    """``device`` as a torch.device (None stays None), refusing what the ops
    cannot run on: an unknown name, ``meta`` (no data), a CUDA device that
    is not there. A bare ``cuda`` in a process torchrun started means this
    process's own GPU, ``cuda:LOCAL_RANK`` (shared round-robin when there
    are more processes than GPUs)."""
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise VocabxferError(f"device {device!r} is not a device name torch knows; expected "
                             "cpu, cuda or cuda:N") from None
    if resolved.type == "meta":
        raise VocabxferError("device 'meta' holds no data, so no rows can be written there; "
                             "expected cpu, cuda or cuda:N")
    if resolved.type not in ("cpu", "cuda"):
        raise VocabxferError(f"device {device!r}: vocabxfer's kernels run on cpu and cuda "
                             "only; expected cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise VocabxferError(f"device {device!r}: no CUDA device is available here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise VocabxferError(f"device {device!r}: there are only "
                                 f"{torch.cuda.device_count()} CUDA devices here")
        local_rank = os.environ.get("LOCAL_RANK")
        if resolved.index is None and local_rank is not None:
            resolved = torch.device("cuda", int(local_rank) % torch.cuda.device_count())
    return resolved
