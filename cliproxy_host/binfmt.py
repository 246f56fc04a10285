"""What a library file's header (ELF, Mach-O, PE) says it is, and why this host cannot load it."""

from __future__ import annotations

import errno
import os
import platform
import stat
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# ELF (System V ABI, "ELF header" and "Dynamic section"): e_ident, then e_type, e_machine.
_ELF_MAGIC: Final = b"\x7fELF"
_ELF_CLASS_BITS: Final = {1: 32, 2: 64}
_ELF_DATA_LITTLE: Final = {1: True, 2: False}
_ET_REL, _ET_EXEC, _ET_DYN, _ET_CORE = 1, 2, 3, 4
_PT_DYNAMIC: Final = 2
_DT_NULL: Final = 0
_DT_FLAGS_1: Final = 0x6FFFFFFB
_DF_1_PIE: Final = 0x08000000
# A .dynamic section holds a few dozen entries; never walk more than this many.
_MAX_DYNAMIC_ENTRIES: Final = 4096
_MAX_OFFSET: Final = 2**62
ELF_MACHINES: Final = {
    2: "sparc",
    3: "x86",
    8: "mips",
    20: "powerpc",
    21: "powerpc64",
    22: "s390",
    40: "arm",
    43: "sparc64",
    62: "x86-64",
    183: "aarch64",
    243: "riscv",
    258: "loongarch",
}
# platform.machine() spellings -> the ELF names above.
_HOST_MACHINES: Final = {
    "x86_64": "x86-64",
    "amd64": "x86-64",
    "x64": "x86-64",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "x86": "x86",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "ppc64": "powerpc64",
    "ppc64le": "powerpc64",
    "ppc": "powerpc",
    "s390x": "s390",
    "riscv64": "riscv",
    "loongarch64": "loongarch",
    "mips": "mips",
    "mips64": "mips",
    "sparc64": "sparc64",
}
# A 32-bit Python on a 64-bit kernel reports the kernel's machine but loads 32-bit code.
_MACHINE_32BIT: Final = {"x86-64": "x86", "aarch64": "arm", "powerpc64": "powerpc"}

# Mach-O (<mach-o/loader.h>, <mach-o/fat.h>): magic as read little-endian.
_MACHO_MAGIC: Final = {
    0xFEEDFACE: (32, True),
    0xCEFAEDFE: (32, False),
    0xFEEDFACF: (64, True),
    0xCFFAEDFE: (64, False),
}
_FAT_MAGIC_BE: Final = b"\xca\xfe\xba\xbe"  # also a Java class file: told apart by count
_MACHO_CPUS: Final = {7: "x86", 0x01000007: "x86-64", 12: "arm", 0x0100000C: "aarch64"}
_MH_EXECUTE, _MH_DYLIB, _MH_BUNDLE = 2, 6, 8

# PE (Microsoft PE/COFF specification): "MZ", e_lfanew at 0x3c, "PE\0\0", COFF header.
_PE_MACHINES: Final = {0x14C: "x86", 0x8664: "x86-64", 0xAA64: "aarch64", 0x1C4: "arm"}
_IMAGE_FILE_DLL: Final = 0x2000

_FORMAT_OS: Final = {"ELF": "Linux", "Mach-O": "macOS", "PE": "Windows"}
_SHARED_FLAG: Final = "build it as a shared library (-shared in C, crate-type cdylib in Rust)"


@dataclass(frozen=True)
class Target:
    """What a binary is built for, or what this process can load."""

    format: str  # ELF | Mach-O | PE
    machine: str | None  # ELF names: x86-64, aarch64, ... (None: not known)
    bits: int
    little_endian: bool


@dataclass(frozen=True)
class Header:
    """What a file's first bytes say it is."""

    kind: str  # shared library | executable | object file | core dump | text file | ...
    target: Target | None  # None for a file that is no binary of a known format

    @property
    def is_library(self) -> bool:
        return self.kind == "shared library"


def host_target() -> Target:
    """The binaries this Python process can load."""
    bits = struct.calcsize("P") * 8
    fmt = {"darwin": "Mach-O", "win32": "PE", "cygwin": "PE"}.get(sys.platform, "ELF")
    machine = _HOST_MACHINES.get(platform.machine().lower())
    if machine is not None and bits == 32:
        machine = _MACHINE_32BIT.get(machine, machine)
    return Target(fmt, machine, bits, sys.byteorder == "little")


# Bytes of a file at an offset: fewer when the file ends first.
_Read = Callable[[int, int], bytes]


def _unpack(read: _Read, fmt: str, offset: int) -> tuple[int, ...]:
    """struct.unpack of the bytes at `offset`; struct.error when the file ends before."""
    return struct.unpack(fmt, read(offset, struct.calcsize(fmt)))


def _elf_pie(read: _Read, bits: int, end: str) -> bool:
    """Whether an ET_DYN file is a position-independent executable (DF_1_PIE set)."""
    ph_fmt, dyn_fmt = (
        (f"{end}IIIIIIII", f"{end}ii") if bits == 32 else (f"{end}IIQQQQQQ", f"{end}qQ")
    )
    try:
        (phoff,) = _unpack(read, f"{end}I" if bits == 32 else f"{end}Q", 28 if bits == 32 else 32)
        phentsize, phnum = _unpack(read, f"{end}HH", 42 if bits == 32 else 54)
        for index in range(phnum):
            fields = _unpack(read, ph_fmt, phoff + index * phentsize)
            # p_type comes first in both classes; p_offset and p_filesz sit apart in each.
            if fields[0] != _PT_DYNAMIC:
                continue
            offset, size = (fields[1], fields[4]) if bits == 32 else (fields[2], fields[5])
            step = struct.calcsize(dyn_fmt)
            table = read(offset, min(size // step, _MAX_DYNAMIC_ENTRIES) * step)
            for tag, value in struct.iter_unpack(dyn_fmt, table[: len(table) // step * step]):
                if tag == _DT_NULL:
                    break
                if tag == _DT_FLAGS_1:
                    return bool(value & _DF_1_PIE)
    except struct.error:  # a truncated table: dlopen will say what is wrong with it
        return False
    return False


def _elf(read: _Read, head: bytes) -> Header:
    bits = _ELF_CLASS_BITS.get(head[4], 0) if len(head) > 4 else 0
    little = _ELF_DATA_LITTLE.get(head[5]) if len(head) > 5 else None
    if not bits or little is None or len(head) < 20:
        return Header("damaged ELF file", None)
    end = "<" if little else ">"
    e_type, e_machine = struct.unpack_from(f"{end}HH", head, 16)
    machine = ELF_MACHINES.get(e_machine, f"ELF machine {e_machine}")
    target = Target("ELF", machine, bits, little)
    kinds = {_ET_REL: "object file", _ET_EXEC: "executable", _ET_CORE: "core dump"}
    if e_type == _ET_DYN:
        return Header("executable" if _elf_pie(read, bits, end) else "shared library", target)
    return Header(kinds.get(e_type, f"file of type {e_type}"), target)


def _macho(head: bytes, bits: int, little: bool) -> Header:
    end = "<" if little else ">"
    try:
        cpu, _sub, filetype = struct.unpack_from(f"{end}iiI", head, 4)
    except struct.error:
        return Header("damaged Mach-O file", None)
    kinds = {_MH_EXECUTE: "executable", _MH_DYLIB: "shared library", _MH_BUNDLE: "shared library"}
    target = Target("Mach-O", _MACHO_CPUS.get(cpu), bits, little)
    return Header(kinds.get(filetype, "file"), target)


def _pe(read: _Read) -> Header | None:
    try:
        (lfanew,) = _unpack(read, "<I", 0x3C)
        if read(lfanew, 4) != b"PE\0\0":
            return None
        machine, _sections, _stamp, _symtab, _symbols, _optsize, flags = _unpack(
            read, "<HHIIIHH", lfanew + 4
        )
    except struct.error:
        return None
    kind = "shared library" if flags & _IMAGE_FILE_DLL else "executable"
    bits = 64 if machine in (0x8664, 0xAA64) else 32
    return Header(kind, Target("PE", _PE_MACHINES.get(machine), bits, True))


def _text_kind(head: bytes) -> str | None:
    if head.startswith(b"#!"):
        return "script"
    if b"\0" in head:
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut at the end
            return None
    return "text file"


def _identify(read: _Read) -> Header:
    head = read(0, 512)
    if not head:
        return Header("empty file", None)
    if head.startswith(_ELF_MAGIC):
        return _elf(read, head)
    if len(head) >= 8:
        (magic,) = struct.unpack_from("<I", head)
        if magic in _MACHO_MAGIC:
            return _macho(head, *_MACHO_MAGIC[magic])
        # A universal binary holds a handful of architectures; a Java class's version is >= 45.
        if head.startswith(_FAT_MAGIC_BE) and 0 < struct.unpack_from(">I", head, 4)[0] < 45:
            return Header("shared library", Target("Mach-O", None, 64, True))
    if head.startswith(b"MZ"):
        pe = _pe(read)
        if pe is not None:
            return pe
    if head.startswith(b"!<arch>\n"):
        return Header("static library (ar archive)", None)
    return Header(_text_kind(head) or "file of unknown format", None)


def identify(data: bytes) -> Header:
    """What the bytes of a file are: a pure function of the bytes."""
    return _identify(lambda offset, size: data[offset : offset + size])


def read_header(path: Path) -> Header:
    """identify() of a file, reading only the parts it looks at.

    Read, never mapped: a file truncated while it is looked at (a plugin copied over)
    must end in a short read, not in a SIGBUS that kills the host.
    """
    with path.open("rb") as fh:

        def read(offset: int, size: int) -> bytes:
            if offset > _MAX_OFFSET:  # a forged offset: past any file, and past seek()
                return b""
            fh.seek(offset)
            return fh.read(size)

        return _identify(read)


def _a(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _describe(target: Target, other: Target) -> str:
    """A target's name, with what sets it apart from `other`: "32-bit x86"."""
    parts = []
    if target.little_endian != other.little_endian:
        parts.append("little-endian" if target.little_endian else "big-endian")
    if target.bits != other.bits:
        parts.append(f"{target.bits}-bit")
    parts.append(target.machine or "an unknown architecture")
    return " ".join(parts)


def mismatch(header: Header, host: Target) -> str | None:
    """Why this host cannot load a file with this header, with the fix; None if it may."""
    target = header.target
    if target is None:
        if header.kind == "empty file":
            return "empty file, not a shared library; copy or build the plugin again"
        return f"not a shared library ({_a(header.kind)} {header.kind}); {_SHARED_FLAG}"
    if target.format != host.format:
        what = f"{target.format} {header.kind}"
        here = _FORMAT_OS[host.format]
        return (
            f"built for {_FORMAT_OS[target.format]} ({_a(what)} {what}), this host is {here}; "
            f"use the plugin's {here} build"
        )
    if not header.is_library:
        kind = f"{target.format} {header.kind}"
        return f"not a shared library ({_a(kind)} {kind}); {_SHARED_FLAG}"
    if target.machine is None or host.machine is None:
        return None  # cannot tell: let the loader decide
    if (target.machine, target.bits, target.little_endian) != (
        host.machine,
        host.bits,
        host.little_endian,
    ):
        return (
            f"built for {_describe(target, host)}, this host is {_describe(host, target)}; "
            f"build the plugin for {_describe(host, target)}"
        )
    return None


def unreadable(path: Path, exc: OSError) -> str:
    """One line for a plugin file that cannot be opened, naming it and the fix."""
    if exc.errno == errno.ELOOP:
        return f"symlink loop at {path}; point the link at a plugin library file"
    if path.is_symlink():
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        if exc.errno == errno.ENOENT:
            return f"broken symlink at {path} -> {target}; point the link at an existing file"
    return f"cannot read {path}: {exc.strerror or exc}; check the file and its permissions"


def load_problem(path: Path, host: Target | None = None) -> str | None:
    """Why `path` cannot be loaded as a plugin by this host, in one line; None if it may be.

    Only what the file itself shows is judged: a missing dependency or symbol is left to
    the dynamic loader. Every line names the file and says what to do.
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ENOENT and not path.is_symlink():
            return f"plugin file {path} does not exist; check the plugins dir and file name"
        return unreadable(path, exc)
    if not stat.S_ISREG(mode):
        # Never opened: reading a FIFO or a device could block or never end.
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        return f"cannot load {path}: {what}; point the plugin at its library file"
    try:
        header = read_header(path)
    except OSError as exc:
        return unreadable(path, exc)
    reason = mismatch(header, host or host_target())
    return None if reason is None else f"cannot load {path}: {reason}"
