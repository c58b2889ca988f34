"""Checks an installed vocabxfer the way a GPU-server user wants to after
``pip install``: do the compiled ops load, link the shared C++ runtime, give
bit-exact rows on the CPU and on every visible GPU, raise their errors
cleanly (tried in a child process, so that a crash is reported instead of
taking this process down), and carry code for the GPUs present?

``vocabxfer.doctor()`` returns the verdicts; ``vocabxfer doctor`` prints one
line per check and exits 1 if any failed.
"""

import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import torch

from vocabxfer.ops import build_info as compiled

from vocabxfer.ops import elf
from vocabxfer.ops.rows import has_compiled_ops, segment_mean_, transfer_rows_

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
        torch.bfloat16: torch.int16}
CHILD_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Verdict:
    check: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status}  {self.check}: {self.detail}"


@dataclass
class DoctorReport:
    verdicts: List[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(verdict.status != FAIL for verdict in self.verdicts)

    def __str__(self) -> str:
        failed = sum(verdict.status == FAIL for verdict in self.verdicts)
        summary = ("vocabxfer doctor: all checks passed" if not failed
                   else f"vocabxfer doctor: {failed} check(s) failed")
        return "\n".join([str(verdict) for verdict in self.verdicts] + [summary])


# ---- the checks ---------------------------------------------------------------

def check_loads() -> Verdict:
    from vocabxfer.ops import _extension

    if has_compiled_ops():
        return Verdict("compiled ops load", PASS, f"{compiled.module_path()}")
    return Verdict("compiled ops load", FAIL, f"vocabxfer._C did not load "
                   f"({_extension.LOAD_ERROR}); the slower pure-torch fallback runs instead. "
                   "Reinstall with `pip install --no-build-isolation .` against this torch")


def check_cxx_runtime() -> Verdict:
    path = compiled.module_path()
    if path is None:
        return Verdict("shared C++ runtime", SKIP, "no compiled module is installed")
    problem = elf.cxx_runtime_problem(path)
    if problem:
        return Verdict("shared C++ runtime", FAIL, f"{problem}; rebuild with a compiler that "
                       "links libstdc++.so.6, e.g. CXX=/usr/bin/g++ CC=/usr/bin/gcc")
    return Verdict("shared C++ runtime", PASS, "links libstdc++.so.6, carries no copy of it")


def special_values(dtype: torch.dtype, count: int, generator: torch.Generator) -> torch.Tensor:
    """Random bit patterns of `dtype`: NaNs with payloads and both signs,
    infinities, subnormals, signed zeros and ordinary numbers."""
    bits = torch.randint(-2 ** 62, 2 ** 62, (count,), generator=generator, dtype=torch.int64)
    values = bits.to(BITS[dtype]).view(dtype)
    normal = torch.randn(count, generator=generator, dtype=torch.float64).to(dtype)
    keep = torch.rand(count, generator=generator) < 0.5
    values = torch.where(keep, values, normal)
    values[:4] = torch.tensor([0.0, -0.0, float("inf"), float("-inf")], dtype=torch.float64)
    return values


def bit_exact_on(device: torch.device) -> Verdict:
    """transfer_rows_ against ``source[ids].to(dtype)`` bit for bit, over
    every dtype pair, dense and strided; segment_mean_ against float64."""
    generator = torch.Generator().manual_seed(0)
    for source_dtype in FLOAT_DTYPES:
        for target_dtype in FLOAT_DTYPES:
            for strided in (False, True):
                width = 37 if strided else 64
                raw = special_values(source_dtype, 90 * width, generator).reshape(width, 90)
                source = (raw.t() if strided else raw.reshape(90, width)).to(device)
                target_ids = torch.randperm(80, generator=generator)[:50].to(device)
                source_ids = torch.randint(0, 90, (50,), generator=generator).to(device)
                target = torch.zeros(80, width, dtype=target_dtype, device=device)
                transfer_rows_(target, target_ids, source, source_ids)
                expected = source[source_ids].to(target_dtype)
                got = target[target_ids]
                if not torch.equal(got.view(BITS[target_dtype]), expected.view(BITS[target_dtype])):
                    differ = int((got.view(BITS[target_dtype]) != expected.view(
                        BITS[target_dtype])).sum())
                    return Verdict(f"bit-exact on {device}", FAIL,
                                   f"transfer_rows_ {source_dtype} -> {target_dtype}"
                                   f"{' (strided)' if strided else ''}: {differ} elements differ "
                                   "from Tensor.to")
    source = torch.randn(40, 16, generator=generator, dtype=torch.float64)
    target = torch.zeros(10, 16, dtype=torch.float64, device=device)
    weights = torch.rand(12, generator=generator, dtype=torch.float64) + 0.1
    # The weights go with the indices (host lists here), as the op asks.
    segment_mean_(target, list(range(10)), source.to(device), list(range(12)),
                  [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12], weights)
    expected = torch.cat([source[:8], torch.stack([
        (source[8:10] * weights[8:10, None]).sum(0) / weights[8:10].sum(),
        (source[10:12] * weights[10:12, None]).sum(0) / weights[10:12].sum()])])
    if not torch.allclose(target.cpu(), expected, rtol=1e-12, atol=1e-12):
        return Verdict(f"bit-exact on {device}", FAIL, "segment_mean_ differs from a float64 "
                       "reference")
    return Verdict(f"bit-exact on {device}", PASS, "transfer_rows_ matches Tensor.to bit for bit "
                   "over 16 dtype pairs (NaN payloads, signed zeros, strided views); "
                   "segment_mean_ matches float64")


# Bad calls whose messages format numbers (where a second C++ runtime in the
# process crashes), with the exception and message each must raise.
ErrorCase = Tuple[str, Callable[[torch.device], None], type, str]


def error_cases() -> List[ErrorCase]:
    def rows(device):
        return torch.zeros(4, 2, device=device), torch.ones(3, 2, device=device)

    def out_of_range(device):
        target, source = rows(device)
        transfer_rows_(target, [0, 1], source, [0, 7])

    def repeated(device):
        target, source = rows(device)
        transfer_rows_(target, [2, 0, 2], source, [0, 1, 2])

    def wrong_dtype(device):
        target, source = rows(device)
        transfer_rows_(target.int(), [0], source, [0])

    def bad_offsets(device):
        target, source = rows(device)
        segment_mean_(target, [0, 1], source, [0, 1, 2], [0, 2, 2])

    return [
        ("index out of range", out_of_range, IndexError,
         "transfer_rows_: source_index[1] = 7 is out of range for source with 3 rows"),
        ("repeated target row", repeated, ValueError,
         "transfer_rows_: target_index holds row 2 twice (positions 0 and 2)"),
        ("wrong dtype", wrong_dtype, TypeError,
         "transfer_rows_: target must be float64, float32, float16 or bfloat16, got Int"),
        ("bad offsets", bad_offsets, ValueError,
         "segment_mean_: offsets[2] = 2 but must equal the length of source_index (3)"),
    ]


def visible_devices() -> List[torch.device]:
    return [torch.device("cpu")] + [torch.device("cuda", index)
                                    for index in range(torch.cuda.device_count())]


def run_error_cases() -> List[str]:
    """Runs every error case on every device; returns what went wrong."""
    problems = []
    for device in visible_devices():
        for name, call, exception, message in error_cases():
            try:
                call(device)
            except exception as error:
                if message not in str(error):
                    problems.append(f"{name} on {device}: message {str(error)!r}, expected "
                                    f"{message!r}")
                continue
            except Exception as error:  # noqa: BLE001 - reported, not hidden
                problems.append(f"{name} on {device}: raised {type(error).__name__}, expected "
                                f"{exception.__name__}")
                continue
            problems.append(f"{name} on {device}: raised nothing")
    return problems


# The child interpreter's program: every error case on every device.
CHILD_PROGRAM = ("import sys; from vocabxfer.ops.doctor import run_error_cases; "
                 "problems = run_error_cases(); print('\\n'.join(problems)); "
                 "sys.exit(1 if problems else 0)")


def check_error_paths(program: str = CHILD_PROGRAM) -> Verdict:
    """The error cases, run in a child interpreter: a crash there (a second
    C++ runtime, say) is reported here with its signal instead of killing
    the caller."""
    check = "errors raise cleanly (child process)"
    try:
        result = subprocess.run([sys.executable, "-c", program], capture_output=True,
                                text=True, timeout=CHILD_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return Verdict(check, FAIL, f"the child process hung for {CHILD_TIMEOUT_SECONDS} s")
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        return Verdict(check, FAIL, f"the child interpreter died with {name} while raising an "
                       "op's error; the usual cause is a compiled module that carries a static "
                       "copy of the C++ runtime (see the shared C++ runtime check)")
    if result.returncode != 0:
        lines = (result.stdout.strip().splitlines() or result.stderr.strip().splitlines()[-1:]
                 or [f"the child exited with status {result.returncode}"])
        return Verdict(check, FAIL, "; ".join(lines))
    devices = ", ".join(str(device) for device in visible_devices())
    return Verdict(check, PASS, f"{len(error_cases())} bad calls on {devices} raised the "
                   "expected errors")


def check_architectures() -> List[Verdict]:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return [Verdict("CUDA architectures", SKIP, "no GPU is visible")]
    code = compiled.cuda_code()
    built = ", ".join(str(piece) for piece in code) or "none (a CPU-only build)"
    verdicts = []
    for index in range(count):
        capability = torch.cuda.get_device_capability(index)
        name = torch.cuda.get_device_name(index)
        check = f"CUDA architectures for cuda:{index}"
        if compiled.runs_on(code, capability):
            verdicts.append(Verdict(check, PASS, f"{name} (sm_{capability[0]}{capability[1]}) "
                                    f"runs the built code ({built})"))
        else:
            verdicts.append(Verdict(check, FAIL, f"{name} is sm_{capability[0]}{capability[1]} "
                                    f"but _C carries only {built}; rebuild with "
                                    f"TORCH_CUDA_ARCH_LIST={capability[0]}.{capability[1]}"))
    return verdicts


def doctor() -> DoctorReport:
    """Run every check, on the CPU and every visible GPU. Never raises for a
    failed check: each becomes a FAIL verdict."""
    report = DoctorReport([check_loads(), check_cxx_runtime()])
    for device in visible_devices():
        try:
            report.verdicts.append(bit_exact_on(device))
        except Exception as error:  # noqa: BLE001 - a failed check, reported
            report.verdicts.append(Verdict(f"bit-exact on {device}", FAIL,
                                           f"{type(error).__name__}: {error}"))
    report.verdicts.append(check_error_paths())
    report.verdicts.extend(check_architectures())
    return report
