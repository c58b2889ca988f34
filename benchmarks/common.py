"""Helpers shared by the benchmark scripts: timing, machine description and
result files."""

import datetime
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, List, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description(device: str = "cpu") -> str:
    """One paragraph naming the machine and versions, for every result file."""
    lines = [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {platform.node() or 'unknown'}, {cpu_model()}, "
        f"{os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"CUDA (torch build) {torch.version.cuda or 'none'}",
    ]
    if device.startswith("cuda") and torch.cuda.is_available():
        lines.append(f"- GPU: {torch.cuda.get_device_name()} (driver CUDA "
                     f"{_driver_version()})")
    try:
        import vocabxfer
        lines.append(f"- vocabxfer {vocabxfer.__version__}, compiled kernels: "
                     f"{vocabxfer.has_compiled_ops()}")
    except ImportError:
        pass
    return "\n".join(lines)


def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class CacheFlusher:
    """Writes a buffer larger than the last-level cache, so that the next
    timed call starts cold, as a one-shot initialisation does."""

    def __init__(self, device: str = "cpu", megabytes: int = 256):
        self.buffer = torch.empty(megabytes * 2 ** 20 // 4, dtype=torch.float32, device=device)

    def __call__(self) -> None:
        self.buffer.fill_(1.0)


def time_call(function: Callable[[], object], device: str = "cpu", repeats: int = 20,
              warmup: int = 3, reset: Optional[Callable[[], object]] = None) -> List[float]:
    """Seconds of each of `repeats` calls, after `warmup` untimed calls.
    `reset` runs untimed before each call (e.g. to restore the target)."""
    for _ in range(warmup):
        if reset:
            reset()
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if reset:
            reset()
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median(values: List[float]) -> float:
    return statistics.median(values)


def write_result(name: str, title: str, body: str, device: str = "cpu",
                 out_dir: Optional[Path] = None) -> Path:
    """Write a markdown result file with the machine description on top."""
    out_dir = Path(out_dir) if out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(f"# {title}\n\n{machine_description(device)}\n\n{body}\n")
    return path


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
