"""The compiled module as built: it links the shared C++ runtime (read from
its ELF dynamic section), and the GPU code it carries is read correctly."""

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch

import vocabxfer
from vocabxfer.ops import build_info as compiled
from vocabxfer.ops import elf
from vocabxfer.ops.build_info import CudaCode

NVCC = shutil.which("nvcc", path=str(Path("/usr/local/cuda/bin"))) or shutil.which("nvcc")


@pytest.fixture
def module():
    path = compiled.module_path()
    if path is None or not vocabxfer.has_compiled_ops():
        pytest.fail("vocabxfer._C is not installed or did not load; build it first")
    return path


def test_module_needs_the_shared_cxx_runtime(module):
    needed = elf.ElfFile(module).needed()
    assert "libstdc++.so.6" in needed, needed
    assert elf.cxx_runtime_problem(module) is None


def test_a_module_without_the_shared_runtime_is_named(tmp_path):
    # A C library links no C++ runtime: the check must say so.
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    source = tmp_path / "plain.c"
    source.write_text("#include <stdio.h>\nvoid hello(void) { puts(\"hello\"); }\n")
    library = tmp_path / "plain.so"
    subprocess.run([compiler, "-shared", "-fPIC", str(source), "-o", str(library)], check=True)
    problem = elf.cxx_runtime_problem(library)
    assert problem is not None
    assert "does not load the shared C++ runtime libstdc++.so.6 (it loads only libc.so.6)" \
        in problem


def test_non_elf_files(tmp_path):
    text = tmp_path / "not-elf.so"
    text.write_text("hello")
    with pytest.raises(elf.ElfError, match="not an ELF file"):
        elf.ElfFile(text)
    assert elf.cxx_runtime_problem(text) is None
    assert compiled.cuda_code(text) == []


def fatbin(entries):
    """A fatbinary as nvcc lays it out: a 16-byte header, then entries of a
    64-byte header (kind at 0, header size at 4, payload size at 8, sm number
    at 28) followed by the payload."""
    body = b""
    for kind, arch, payload in entries:
        header = bytearray(64)
        struct.pack_into("<HHIQ", header, 0, kind, 0x0101, 64, len(payload))
        struct.pack_into("<I", header, 28, arch)
        body += bytes(header) + payload
    return struct.pack("<IHHQ", compiled.FATBIN_MAGIC, 1, 16, len(body)) + body


def test_fatbin_entries_of_a_synthetic_section():
    section = fatbin([(2, 80, b"\x01" * 24), (1, 90, b"ptx text\x00")]) + b"\x00" * 8 + \
        fatbin([(2, 120, b"\x02" * 8)])
    assert list(compiled.fatbin_entries(section)) == [(2, 80), (1, 90), (2, 120)]


def test_which_code_runs_where():
    sass_80, ptx_90 = CudaCode((8, 0), "sass"), CudaCode((9, 0), "ptx")
    assert sass_80.runs_on((8, 6)) and not sass_80.runs_on((9, 0))
    assert ptx_90.runs_on((9, 0)) and ptx_90.runs_on((12, 0)) and not ptx_90.runs_on((8, 9))
    assert compiled.runs_on([sass_80, ptx_90], (10, 0))
    assert not compiled.runs_on([sass_80], (7, 5))
    assert str(sass_80) == "sm_80" and str(ptx_90) == "compute_90"


@pytest.mark.skipif(NVCC is None, reason="no nvcc")
def test_cuda_code_of_an_object_built_here(tmp_path):
    source = tmp_path / "kernel.cu"
    source.write_text("__global__ void kernel(float* x) { x[0] = 1; }\n")
    target = tmp_path / "kernel.o"
    subprocess.run([NVCC, "-c", str(source), "-o", str(target),
                    "-gencode", "arch=compute_80,code=sm_80",
                    "-gencode", "arch=compute_90,code=compute_90"], check=True)
    assert [str(code) for code in compiled.cuda_code(target)] == ["sm_80", "compute_90"]


def test_installed_module_carries_cuda_code_when_built_for_cuda(module):
    code = compiled.cuda_code(module)
    has_cuda_kernels = torch._C._dispatch_has_kernel_for_dispatch_key(
        "vocabxfer::transfer_rows_", "CUDA")
    assert bool(code) == has_cuda_kernels
    for piece in code:
        assert piece.kind in ("sass", "ptx") and 5 <= piece.arch[0] <= 13, piece
