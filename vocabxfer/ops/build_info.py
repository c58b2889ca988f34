"""The compiled module as it was built: where it is, and which GPU
architectures its CUDA kernels carry (read from the fatbinary that nvcc
embeds in the ``.nv_fatbin`` section).

A GPU runs a kernel if the module has machine code (SASS) for the GPU's major
version at or below its minor version, or PTX for an architecture at or
below the GPU's, which the driver compiles on first use.
"""

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from vocabxfer.ops.elf import ElfError, ElfFile

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_SASS = 1, 2


@dataclass(frozen=True, order=True)
class CudaCode:
    """One piece of device code in the fatbinary: ``kind`` is "sass" or
    "ptx", ``arch`` the compute capability as (major, minor)."""

    arch: Tuple[int, int]
    kind: str

    def __str__(self) -> str:
        return f"{'sm' if self.kind == 'sass' else 'compute'}_{self.arch[0]}{self.arch[1]}"

    def runs_on(self, capability: Tuple[int, int]) -> bool:
        if self.kind == "ptx":
            return self.arch <= capability
        return self.arch[0] == capability[0] and self.arch[1] <= capability[1]


def module_path() -> Optional[Path]:
    """The installed ``vocabxfer/_C*.so``, or None if there is none."""
    return next(iter(sorted(Path(__file__).parents[1].glob("_C*.so"))), None)  # vocabxfer/


def fatbin_entries(section: bytes) -> Iterator[Tuple[int, int]]:
    """(kind, sm number) of every entry of every fatbinary in the section."""
    position = 0
    while position + 16 <= len(section):
        magic, _, header_size, size = struct.unpack_from("<IHHQ", section, position)
        if magic != FATBIN_MAGIC:
            position += 8  # fatbinaries are 8-byte aligned; skip padding
            continue
        entry = position + header_size
        end = entry + size
        while entry + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", section, entry)
            (arch,) = struct.unpack_from("<I", section, entry + 28)
            yield kind, arch
            entry += entry_header + payload
        position = end


def cuda_code(path: Optional[Path] = None) -> List[CudaCode]:
    """The device code in the compiled module (empty for a CPU-only build)."""
    path = path or module_path()
    if path is None:
        return []
    try:
        section = ElfFile(path).section(".nv_fatbin")
    except ElfError:
        return []
    if section is None:
        return []
    found = {CudaCode((arch // 10, arch % 10), "sass" if kind == KIND_SASS else "ptx")
             for kind, arch in fatbin_entries(section) if kind in (KIND_PTX, KIND_SASS)}
    return sorted(found)


def runs_on(code: List[CudaCode], capability: Tuple[int, int]) -> bool:
    """Whether any of the device code runs on a GPU of this capability."""
    return any(piece.runs_on(capability) for piece in code)
