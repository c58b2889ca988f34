"""Helpers shared by the benchmark scripts (in speed/, quality/ and gpu/):
timing, the machine, versions and commit a result ran on, and result files,
written beside each script in its kind's results/ folder."""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import torch

BENCHMARKS = Path(__file__).resolve().parent
KINDS = ("speed", "quality", "gpu")
# A script imports another by name, whatever its kind (the GPU's kernel
# sweep reuses the speed benchmarks' cases).
for _kind in KINDS:
    if str(BENCHMARKS / _kind) not in sys.path:
        sys.path.append(str(BENCHMARKS / _kind))
SHARED_DATA = BENCHMARKS.parents[1] / "shared" / "data"


def _results_of_running_script() -> Path:
    """The results/ folder beside the script being run (speed/results for
    benchmarks/speed/bench_match.py)."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is not None and script.parent.parent == BENCHMARKS and \
            script.parent.name in KINDS:
        return script.parent / "results"
    return BENCHMARKS / "results"


RESULTS = _results_of_running_script()


def argument_parser(doc: str, data: bool = False) -> argparse.ArgumentParser:
    """A benchmark's parser with the options every script shares: --out, and
    --data for those that read ../shared/data."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if data:
        parser.add_argument("--data", type=Path, default=SHARED_DATA,
                            help="folder with nsmc/ and vocab/ (default: ../shared/data)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the results (default: benchmarks/results)")
    return parser


def pyplot():
    """matplotlib's pyplot drawing to files, with no display needed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot().close(figure)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def commit_description() -> str:
    """The commit the result ran on, and whether the code differed from it."""
    def git(*arguments: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(BENCHMARKS), *arguments],
                                  capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short=10", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    # The code and the scripts; not the result files a run is writing.
    changed = git("status", "--porcelain", "--", "../vocabxfer", "../csrc", "../setup.py",
                  "*.py")
    return commit + (" with uncommitted changes to the code" if changed else "")


def machine_description(device: str = "cpu") -> str:
    """One paragraph naming the commit, machine and versions, for every
    result file."""
    lines = [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- commit: {commit_description()}",
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


def random_matrix(rows: int, width: int, dtype: torch.dtype, device: str,
                  seed: int) -> torch.Tensor:
    """N(0, 1) values drawn where they will live: drawing a GPU case's
    gigabytes on the CPU would take longer than the benchmark."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(rows, width, generator=generator, device=device).to(dtype)


def random_ids(count: int, upto: int, device: str, seed: int) -> torch.Tensor:
    """`count` distinct row ids below `upto`, in random order."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(upto, generator=generator)[:count].to(device)


def _profiled_cuda_calls(function: Callable[[], object]) -> dict:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        function()
        torch.cuda.synchronize()
    counts = {"launches": 0, "memsets": 0, "copies": 0, "synchronisations": 0}
    for event in prof.events():
        name = event.name
        if name.startswith(("cudaLaunchKernel", "cuLaunchKernel")):
            counts["launches"] += 1
        elif name.startswith("cudaMemset"):
            counts["memsets"] += 1
        elif name.startswith("cudaMemcpy"):
            counts["copies"] += 1
        elif name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"):
            counts["synchronisations"] += 1
    return counts


def count_cuda_calls(function: Callable[[], object]) -> dict:
    """What one call costs the host on a GPU, from the profiler's record of
    CUDA runtime calls: kernel launches, memsets, copies, synchronisations,
    less what an empty call records (the closing synchronize, and on some
    torch versions one of the profiler's own)."""
    function()  # warm: first-call set-up is not the op's cost
    counts = _profiled_cuda_calls(function)
    empty = _profiled_cuda_calls(lambda: None)
    return {name: counts[name] - empty[name] for name in counts}


def run_child(program: str, checkout, *arguments: str) -> dict:
    """Runs `program` (python -c) with a checkout's path and `arguments`;
    returns the JSON of its last "RESULT " line. For side-by-side timings
    of two checkouts, each in a process of its own."""
    import subprocess
    import sys

    output = subprocess.run([sys.executable, "-c", program, str(checkout), *arguments],
                            capture_output=True, text=True,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
    if output.returncode or not lines:
        raise SystemExit(f"the run in {checkout} failed:\n{output.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def write_json(name: str, data: dict, out_dir: Optional[Path] = None) -> Path:
    """Raw numbers beside the markdown, for benchmarks/gpu/gpu_summary.py."""
    out_dir = Path(out_dir) if out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


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


# ---- the reference case on real data (../shared/data) ------------------------

def nsmc_documents(data_dir: Path, include_test: bool = False) -> List[str]:
    """The `document` column of the non-empty NSMC rows (nsmc.txt)."""
    names = ["ratings_train.txt"] + (["ratings_test.txt"] if include_test else [])
    documents = []
    for name in names:
        with open(data_dir / "nsmc" / name, encoding="utf-8") as handle:
            next(handle)  # header
            for line in handle:
                fields = line.rstrip("\n").split("\t")
                if len(fields) >= 2 and fields[1]:
                    documents.append(fields[1])
    return documents


def train_reference_tokenizer(documents: List[str], vocab_size: int = 30000):
    """The common recipe's target tokenizer: BertWordPieceTokenizer with its
    defaults, lowercase=False, strip_accents=False, min_frequency=2."""
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    tokenizer.train_from_iterator(documents, vocab_size=vocab_size, min_frequency=2,
                                  show_progress=False)
    return tokenizer


def require_data(data_dir: Path) -> Path:
    if not (data_dir / "nsmc").is_dir() or not (data_dir / "vocab").is_dir():
        raise SystemExit(f"skipped: no real data at {data_dir} (expected nsmc/ and vocab/; "
                         "pass --data DIR)")
    return data_dir
