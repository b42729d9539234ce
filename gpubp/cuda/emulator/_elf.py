"""The thread-local (TLS) symbols of an ELF64 object or shared library, read from its ``.symtab``.

The emulator keeps shared memory in TLS (cuda_shim.h), so these name what it needs to know
about a module's shared memory without a GPU toolchain:

* in the compiled wrapper object, the *undefined* TLS symbols are the ``extern __shared__``
  arrays (whatever their type, scope or namespace), which the build defines as aliases of the
  one dynamic region;
* in the linked library, each *defined* TLS symbol is one ``__shared__`` variable, its value the
  offset in the module's TLS block and its size the bytes it takes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

SHT_SYMTAB = 2
STT_TLS = 6
SHN_UNDEF = 0


@dataclass(frozen=True)
class TlsSymbol:
    name: str
    offset: int     # in the TLS block (st_value); 0 when undefined
    size: int
    defined: bool


def tls_symbols(path: Path) -> list[TlsSymbol]:
    """Every TLS symbol of the ELF64 little-endian file at ``path`` (x86-64, AArch64)."""
    return [s for s, tls in _symbols(path) if tls]


def tls_init_functions(path: Path) -> list[str]:
    """The undefined TLS init functions (``_ZTH<name>``) the object at ``path`` calls.  For an ``extern
    thread_local`` variable (an ``extern __shared__`` array) GCC calls its init function, a weak symbol,
    only if it is defined, except inside a template, where it calls it unconditionally (a NULL call
    when nothing defines it): the build defines each as a function that does nothing."""
    return sorted({s.name for s, tls in _symbols(path) if not tls and not s.defined and s.name.startswith("_ZTH")})


def _symbols(path: Path) -> list[tuple[TlsSymbol, bool]]:
    """(symbol, is TLS) for every symbol of the file's .symtab."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out = []
    for _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if sh_type != SHT_SYMTAB or not entsize:
            continue
        strtab_off, strtab_size = sections[link][4], sections[link][5]
        strtab = data[strtab_off:strtab_off + strtab_size]
        for k in range(size // entsize):
            st_name, st_info, _other, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", data,
                                                                                     offset + k * entsize)
            name = strtab[st_name:strtab.index(b"\0", st_name)].decode()
            out.append((TlsSymbol(name, st_value, st_size, st_shndx != SHN_UNDEF), st_info & 0xF == STT_TLS))
    return out
