"""Reads an ELF shared object in plain Python: the libraries it needs, its
sections and the symbols it defines.

Used at build time (setup.py loads this file on its own, before the package
exists) and after install (``vocabxfer doctor``, the tests) to check that the
compiled module links the shared C++ runtime instead of carrying a copy of
its own: two C++ runtimes in one process crash on the first error message.
"""

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Set, Union

MAGIC = b"\x7fELF"
SHT_SYMTAB, SHT_DYNAMIC, SHT_NOBITS, SHT_DYNSYM = 2, 6, 8, 11
DT_NULL, DT_NEEDED = 0, 1
SHN_UNDEF = 0

# Symbols that libstdc++ itself defines (explicit instantiations and locale
# internals). Code built against the shared runtime only refers to them; a
# module that defines one carries a static copy of the runtime.
CXX_RUNTIME_MARKERS = (
    "_ZNSo9_M_insertIlEERSoT_",  # std::ostream::_M_insert<long>
    "_ZNSt6locale7classicEv",    # std::locale::classic()
    "_ZNSt8ios_base4InitC1Ev",   # std::ios_base::Init::Init()
)


class ElfError(ValueError):
    """The file is not an ELF object this reader understands."""


@dataclass(frozen=True)
class Section:
    name: str
    kind: int
    offset: int
    size: int
    link: int
    entry_size: int


class ElfFile:
    """An ELF file read once into memory (32- or 64-bit, either byte order)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.data = self.path.read_bytes()
        if self.data[:4] != MAGIC:
            raise ElfError(f"{self.path}: not an ELF file")
        if self.data[4] not in (1, 2) or self.data[5] not in (1, 2):
            raise ElfError(f"{self.path}: unknown ELF class or byte order")
        self.is_64 = self.data[4] == 2
        self.order = "<" if self.data[5] == 1 else ">"
        self.sections = self._read_sections()

    def _unpack(self, layout: str, offset: int):
        return struct.unpack_from(self.order + layout, self.data, offset)

    def _read_sections(self) -> List[Section]:
        if self.is_64:
            (table,) = self._unpack("Q", 0x28)
            entry_size, count, names_index = self._unpack("HHH", 0x3A)
            layout = "IIQQQQIIQQ"
        else:
            (table,) = self._unpack("I", 0x20)
            entry_size, count, names_index = self._unpack("HHH", 0x2E)
            layout = "IIIIIIIIII"
        raw = [self._unpack(layout, table + index * entry_size) for index in range(count)]
        # (name, type, flags, addr, offset, size, link, info, align, entsize)
        names = raw[names_index] if names_index < count else None

        def name_of(offset: int) -> str:
            return self._string(names[4] + offset) if names else ""

        return [Section(name_of(entry[0]), entry[1], entry[4], entry[5], entry[6], entry[9])
                for entry in raw]

    def _string(self, offset: int) -> str:
        end = self.data.index(b"\x00", offset)
        return self.data[offset:end].decode("utf-8", "replace")

    def section(self, name: str) -> Optional[bytes]:
        """The bytes of the named section, or None if there is none."""
        for section in self.sections:
            if section.name == name and section.kind != SHT_NOBITS:
                return self.data[section.offset:section.offset + section.size]
        return None

    def needed(self) -> List[str]:
        """The DT_NEEDED entries of the dynamic section: the shared libraries
        the loader must load with this one."""
        libraries = []
        for section in self.sections:
            if section.kind != SHT_DYNAMIC:
                continue
            strings = self.sections[section.link]
            entry_size = 16 if self.is_64 else 8
            layout = "qQ" if self.is_64 else "iI"
            for offset in range(section.offset, section.offset + section.size, entry_size):
                tag, value = self._unpack(layout, offset)
                if tag == DT_NULL:
                    break
                if tag == DT_NEEDED:
                    libraries.append(self._string(strings.offset + value))
        return libraries

    def defined_symbols(self) -> Iterator[str]:
        """Names of the symbols this object defines (static and dynamic tables)."""
        for section in self.sections:
            if section.kind not in (SHT_SYMTAB, SHT_DYNSYM) or not section.entry_size:
                continue
            strings = self.sections[section.link]
            for offset in range(section.offset, section.offset + section.size,
                                section.entry_size):
                if self.is_64:
                    name, _, _, index, _, _ = self._unpack("IBBHQQ", offset)
                else:
                    name, _, _, _, _, index = self._unpack("IIIBBH", offset)
                if index != SHN_UNDEF and name:
                    yield self._string(strings.offset + name)


def cxx_runtime_problem(path: Union[str, Path]) -> Optional[str]:
    """Why the shared object at `path` does not use the shared C++ runtime,
    or None when it does (or when it is not ELF, where this cannot be told)."""
    try:
        elf = ElfFile(path)
    except ElfError:
        return None
    needed = elf.needed()
    if not any(library.startswith("libstdc++.so") for library in needed):
        loads = f"it loads only {', '.join(needed)}" if needed else "it loads no shared library"
        return (f"{Path(path).name} does not load the shared C++ runtime libstdc++.so.6 "
                f"({loads}), so it carries a static copy")
    markers: Set[str] = set(CXX_RUNTIME_MARKERS)
    copied = sorted(markers.intersection(elf.defined_symbols()))
    if copied:
        return (f"{Path(path).name} loads libstdc++.so.6 but also defines the runtime's own "
                f"symbols ({', '.join(copied)}), so part of the runtime was linked statically")
    return None

