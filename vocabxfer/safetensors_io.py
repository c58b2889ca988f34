"""Reads single tensors from a safetensors file, and writes safetensors files
whose unchanged tensors are copied as bytes, straight from the source file:
they never enter memory as tensors.

The format: 8 bytes (little-endian) giving the header's length, the header
(JSON: for every tensor its dtype, shape and [start, end) in the data
section, plus optional ``__metadata__``), then the data section.
"""

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from .errors import ModelError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 2 ** 20
COPY_CHUNK_BYTES = 16 * 2 ** 20


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str
    shape: Tuple[int, ...]
    start: int  # within the data section
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class SafetensorsFile:
    """A safetensors file's header, read once; tensors are read on demand."""

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > MAX_HEADER_BYTES:
                    raise ValueError(f"a header of {length} bytes")
                header = json.loads(handle.read(length).decode("utf-8"))
        except (OSError, struct.error, ValueError, UnicodeDecodeError) as error:
            raise ModelError(f"{self.path}: is not a safetensors file ({error})") from None
        self.metadata: Optional[Dict[str, str]] = header.pop("__metadata__", None)
        self.data_start = 8 + length
        self.entries: Dict[str, Entry] = {}
        for name, spec in header.items():
            start, end = spec["data_offsets"]
            self.entries[name] = Entry(name, spec["dtype"], tuple(spec["shape"]), start, end)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def read(self, name: str) -> torch.Tensor:
        """One tensor, as a CPU tensor over a private (copy-on-write) memory
        map of its bytes: nothing is copied, and only the pages the caller
        touches are read from disk. Treat it as read-only."""
        entry = self.entries[name]
        if entry.dtype not in DTYPES:
            raise ModelError(f"{self.path}: tensor {name} has dtype {entry.dtype}, which "
                             "vocabxfer cannot read")
        dtype = DTYPES[entry.dtype]
        start = self.data_start + entry.start
        if self.path.stat().st_size < start + entry.size:
            raise ModelError(f"{self.path}: ends inside tensor {name}; the file is truncated")
        if entry.size == 0:
            return torch.empty(entry.shape, dtype=dtype)
        # Maps begin at a multiple of the allocation granularity.
        begin = start - start % mmap.ALLOCATIONGRANULARITY
        with open(self.path, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), start + entry.size - begin, offset=begin,
                               access=mmap.ACCESS_COPY)
        # The tensor keeps the map alive; the map outlives the closed file.
        return torch.frombuffer(mapped, dtype=dtype, count=entry.size // dtype.itemsize,
                                offset=start - begin).reshape(entry.shape)


    def rows_of(self, name: str, row_dim: int) -> Tuple[int, int]:
        """(rows, elements per row) of a tensor whose dimension `row_dim`
        runs over rows laid out one after another: (V, ...) for row_dim 0,
        (1, V) for row_dim 1."""
        shape = self.entries[name].shape
        if row_dim == 0 and shape:
            return shape[0], _numel(shape[1:])
        if row_dim == 1 and len(shape) == 2 and shape[0] == 1:
            return shape[1], 1
        raise ModelError(f"{self.path}: tensor {name} of shape {shape} has no rows along "
                         f"dimension {row_dim}")

    def read_rows(self, name: str, row_dim: int, row_ids: torch.Tensor) -> torch.Tensor:
        """The rows `row_ids` (sorted, distinct) of a tensor, as a (len, width)
        tensor read with one pread per run of consecutive rows: nothing else
        of the tensor enters memory."""
        entry = self.entries[name]
        dtype = DTYPES[entry.dtype]
        _, width = self.rows_of(name, row_dim)
        row_bytes = width * dtype.itemsize
        out = torch.empty(len(row_ids), width, dtype=dtype)
        view = memoryview(out.view(torch.uint8).numpy()).cast("B") if out.numel() else None
        ids = row_ids.tolist()
        with open(self.path, "rb") as handle:
            run_start = 0
            for position in range(1, len(ids) + 1):
                if position < len(ids) and ids[position] == ids[position - 1] + 1:
                    continue
                first, count = ids[run_start], position - run_start
                wanted = count * row_bytes
                offset = self.data_start + entry.start + first * row_bytes
                got = os.preadv(handle.fileno(),
                                [view[run_start * row_bytes:run_start * row_bytes + wanted]],
                                offset)
                if got != wanted:
                    raise ModelError(f"{self.path}: ends inside tensor {name}; the file is "
                                     "truncated")
                run_start = position
        return out

    def row_chunks(self, name: str, row_dim: int, rows: int, chunk_rows: int):
        """The tensor's first `rows` rows, `chunk_rows` at a time, read into
        one reused buffer: each chunk is valid until the next is read."""
        entry = self.entries[name]
        dtype = DTYPES[entry.dtype]
        _, width = self.rows_of(name, row_dim)
        buffer = torch.empty(chunk_rows, width, dtype=dtype)
        view = memoryview(buffer.view(torch.uint8).numpy()).cast("B")
        row_bytes = width * dtype.itemsize
        with open(self.path, "rb") as handle:
            for start in range(0, rows, chunk_rows):
                count = min(chunk_rows, rows - start)
                wanted = count * row_bytes
                got = os.preadv(handle.fileno(), [view[:wanted]],
                                self.data_start + entry.start + start * row_bytes)
                if got != wanted:
                    raise ModelError(f"{self.path}: ends inside tensor {name}; the file is "
                                     "truncated")
                yield buffer[:count]


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


# What a written file holds, tensor by tensor: bytes copied from an entry of
# another file, or a tensor in memory.
Source = Union[Tuple[SafetensorsFile, str], torch.Tensor]


def _spec(source: Source) -> Tuple[str, Tuple[int, ...], int]:
    if isinstance(source, torch.Tensor):
        return NAMES[source.dtype], tuple(source.shape), source.numel() * source.element_size()
    file, name = source
    entry = file.entries[name]
    return entry.dtype, entry.shape, entry.size


def write(path: Union[str, os.PathLike], tensors: Sequence[Tuple[str, Source]],
          metadata: Optional[Dict[str, str]] = None) -> int:
    """Write a safetensors file of `tensors` in the given order; returns the
    size of its data section. Copied entries go through a bounded buffer."""
    header: Dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, source in tensors:
        dtype, shape, size = _spec(source)
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for name, source in tensors:
            if isinstance(source, torch.Tensor):
                data = source.detach().cpu().contiguous()
                if data.numel():
                    out.write(memoryview(data.view(torch.uint8).numpy()))
            else:
                _copy_bytes(*source, out)
    return offset


def _copy_bytes(file: SafetensorsFile, name: str, out) -> None:
    entry = file.entries[name]
    remaining = entry.size
    with open(file.path, "rb") as handle:
        handle.seek(file.data_start + entry.start)
        while remaining:
            chunk = handle.read(min(remaining, COPY_CHUNK_BYTES))
            if not chunk:
                raise ModelError(f"{file.path}: ends inside tensor {name}; the file is "
                                 "truncated")
            out.write(chunk)
            remaining -= len(chunk)


def in_file_order(file: SafetensorsFile) -> List[str]:
    """The file's tensor names in the order of their data."""
    return sorted(file.entries, key=lambda name: file.entries[name].start)
