"""Where and how a refinement step computes: attention kernels, bfloat16
autocast, and whether the step may run as a CUDA graph. Policy measured on
the devices named; nothing here changes what is computed."""

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from vocabxfer.refinement.graphed_step import can_capture

# Steps on a GPU as CUDA graphs (graphed_step.py); off to compare.
CUDA_GRAPHS = True


def attention_for_training(device: torch.device):
    """On a CPU, SDPA's math backend: its backward is plain matmuls, while
    the fused CPU kernel's backward took 27% of a step (a step is 20% faster
    without it). On a CUDA GPU the fused kernels but cuDNN's: on an H200
    (torch 2.11) it planned anew for each batch shape (2.8 ms of host time
    a call), and with fixed shapes and CUDA graphs 500 MiniLM-sized steps
    still took 3.0 s with it and 2.4 s without (benchmarks/results/gpu)."""
    if device.type == "cpu":
        return sdpa_kernel([SDPBackend.MATH])
    if device.type == "cuda":
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                            SDPBackend.MATH])
    return contextlib.nullcontext()


def fast_bf16(device: torch.device) -> bool:
    """Whether the device multiplies bfloat16 natively: a GPU that supports
    it, or a CPU with AVX512-BF16 or AMX (measured here: 2.8x float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def uses_bf16(precision: str, device: torch.device) -> bool:
    """bfloat16 autocast for the forward passes: asked for, or "auto" on a
    device that computes it fast; the trained rows stay float32."""
    return precision == "bfloat16" or (precision == "auto" and fast_bf16(device))


def graphs_step(model: Any, device: torch.device, world: int, fixed_shape: bool) -> bool:
    """Whether the step runs as a CUDA graph: batches of one shape, on one
    GPU of one process (graphed_step.can_capture says which models)."""
    return CUDA_GRAPHS and fixed_shape and can_capture(model, device, world)
