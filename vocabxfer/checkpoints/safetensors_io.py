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

from vocabxfer.errors import ModelError

# Every dtype the safetensors format names, with its size in bytes: a file
# holding any of them is valid and its tensors can be copied as bytes.
ITEMSIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
             "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
             "I64": 8, "U64": 8, "F64": 8, "C64": 8}
# Those vocabxfer reads as tensors.
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
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
                file_size = os.fstat(handle.fileno()).st_size
                prefix = handle.read(8)
                if len(prefix) < 8:
                    raise ValueError(f"it has {file_size} bytes, fewer than the 8 of the "
                                     "header's length")
                (length,) = struct.unpack("<Q", prefix)
                if length > MAX_HEADER_BYTES or 8 + length > file_size:
                    raise ValueError(f"its header length is {length} bytes, but the file has "
                                     f"{file_size} bytes (and a header may have at most "
                                     f"{MAX_HEADER_BYTES})")
                header = json.loads(handle.read(length).decode("utf-8"),
                                    object_pairs_hook=_refuse_repeated_keys)
        except (OSError, struct.error, ValueError, UnicodeDecodeError, RecursionError) as error:
            raise ModelError(f"{self.path}: is not a safetensors file ({error})") from None
        self.data_start = 8 + length
        self.metadata, self.entries = _parse_header(header, self.path,
                                                    file_size - self.data_start)

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


def _refuse_repeated_keys(pairs: List[Tuple[str, object]]) -> Dict[str, object]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"the header names {repeated!r} twice")
    return document


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_header(header: object, path: Path,
                  data_size: int) -> Tuple[Optional[Dict[str, str]], Dict[str, Entry]]:
    """The header's metadata and entries, checked as safetensors checks
    them: a known dtype, a shape of non-negative ints, offsets that tile the
    data section in order (contiguous, never overlapping, ending where the
    file ends), and each tensor's bytes exactly its elements times their
    size. Anything else is refused: a crafted header must never make a
    tensor read bytes that are not its own."""
    def refuse(problem: str) -> ModelError:
        return ModelError(f"{path}: is not a valid safetensors file: {problem}")

    if not isinstance(header, dict):
        raise refuse(f"the header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
            isinstance(metadata, dict) and
            all(isinstance(value, str) for value in metadata.values())):
        raise refuse("__metadata__ must map strings to strings")
    entries: Dict[str, Entry] = {}
    for name, spec in header.items():
        if not isinstance(spec, dict):
            raise refuse(f"tensor {name!r} is described by a {type(spec).__name__}, "
                         "expected an object with dtype, shape and data_offsets")
        missing = [key for key in ("dtype", "shape", "data_offsets") if key not in spec]
        if missing:
            raise refuse(f"tensor {name!r} has no {', '.join(missing)}")
        dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if not isinstance(dtype, str) or dtype not in ITEMSIZES:
            raise refuse(f"tensor {name!r} has dtype {dtype!r}, which safetensors does not "
                         f"know (expected one of {', '.join(ITEMSIZES)})")
        if not isinstance(shape, list) or not all(_is_int(size) and size >= 0
                                                  for size in shape):
            raise refuse(f"tensor {name!r} has shape {shape!r}, expected a list of "
                         "non-negative ints")
        if not (isinstance(offsets, list) and len(offsets) == 2 and
                all(_is_int(offset) for offset in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise refuse(f"tensor {name!r} has data_offsets {offsets!r}, expected [start, end] "
                         "with 0 <= start <= end")
        start, end = offsets
        expected = _numel(shape) * ITEMSIZES[dtype]
        if end - start != expected:
            raise refuse(f"tensor {name!r} of shape {shape} and dtype {dtype} needs "
                         f"{expected} bytes but its data_offsets {offsets} span {end - start}")
        entries[name] = Entry(name, dtype, tuple(shape), start, end)
    position = 0
    for entry in sorted(entries.values(), key=lambda entry: (entry.start, entry.end)):
        if entry.start != position:
            raise refuse(f"tensor {entry.name!r} starts at byte {entry.start} of the data, "
                         f"expected {position}: the tensors must follow one another with no "
                         "gap or overlap")
        position = entry.end
    if position != data_size:
        raise refuse(f"the tensors take {position} bytes of data but the file holds "
                     f"{data_size} after the header (truncated, or bytes left over)")
    return metadata, entries


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
