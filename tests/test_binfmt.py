"""Reading a library's header: crafted ELF, Mach-O and PE headers and the one-line reasons."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

from cliproxy_host import binfmt
from cliproxy_host.binfmt import Header, Target, identify, load_problem, mismatch

X86_64 = Target("ELF", "x86-64", 64, True)
AARCH64 = Target("ELF", "aarch64", 64, True)

# ELF spec facts: e_machine numbers and e_type values.
EM = {"x86": 3, "x86-64": 62, "aarch64": 183, "powerpc64": 21}
ET_EXEC, ET_DYN = 2, 3


def elf(machine: int, *, bits: int = 64, little: bool = True, e_type: int = ET_DYN) -> bytes:
    """An ELF header: e_ident (magic, class, data, version), e_type, e_machine, zeros."""
    end = "<" if little else ">"
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1 if little else 2, 1]) + bytes(9)
    return ident + struct.pack(f"{end}HHI", e_type, machine, 1) + bytes(48)


def macho(cpu: int = 0x0100000C, filetype: int = 6) -> bytes:
    """A 64-bit little-endian Mach-O header (MH_MAGIC_64, cputype, subtype, MH_DYLIB)."""
    return struct.pack("<IiiIIII", 0xFEEDFACF, cpu, 0, filetype, 0, 0, 0) + bytes(4)


def pe(machine: int = 0x8664, characteristics: int = 0x2022) -> bytes:
    """A DOS stub pointing at a PE signature and COFF header (0x2000: IMAGE_FILE_DLL)."""
    stub = b"MZ" + bytes(0x3A) + struct.pack("<I", 0x40)
    return stub + b"PE\0\0" + struct.pack("<HHIIIHH", machine, 1, 0, 0, 0, 0xF0, characteristics)


def problem(data: bytes, host: Target = X86_64) -> str | None:
    return mismatch(identify(data), host)


def test_a_library_for_this_host_is_accepted() -> None:
    assert identify(elf(EM["x86-64"])) == Header("shared library", X86_64)
    assert problem(elf(EM["x86-64"])) is None


def test_another_architecture_is_named_with_this_hosts() -> None:
    assert problem(elf(EM["aarch64"])) == (
        "built for aarch64, this host is x86-64; build the plugin for x86-64"
    )
    assert problem(elf(EM["x86-64"]), AARCH64) == (
        "built for x86-64, this host is aarch64; build the plugin for aarch64"
    )


def test_a_32_bit_library_on_a_64_bit_host_names_the_class() -> None:
    assert problem(elf(EM["x86"], bits=32)) == (
        "built for 32-bit x86, this host is 64-bit x86-64; build the plugin for 64-bit x86-64"
    )


def test_the_wrong_endianness_is_named() -> None:
    ppc64le = Target("ELF", "powerpc64", 64, True)
    assert problem(elf(EM["powerpc64"], little=False), ppc64le) == (
        "built for big-endian powerpc64, this host is little-endian powerpc64; "
        "build the plugin for little-endian powerpc64"
    )


def test_an_empty_file() -> None:
    assert problem(b"") == "empty file, not a shared library; copy or build the plugin again"


def test_macho_and_pe_files_on_linux_name_their_os() -> None:
    assert problem(macho()) == (
        "built for macOS (a Mach-O shared library), this host is Linux; "
        "use the plugin's Linux build"
    )
    assert problem(pe()) == (
        "built for Windows (a PE shared library), this host is Linux; use the plugin's Linux build"
    )


def test_macho_and_pe_headers_are_read() -> None:
    assert identify(macho(0x01000007, 2)) == Header(
        "executable", Target("Mach-O", "x86-64", 64, True)
    )
    assert identify(pe(0xAA64, 0x0022)) == Header("executable", Target("PE", "aarch64", 64, True))


def test_a_library_for_another_cpu_on_its_own_os_is_named() -> None:
    mac_x86 = Target("Mach-O", "x86-64", 64, True)
    assert problem(macho(), mac_x86) == (
        "built for aarch64, this host is x86-64; build the plugin for x86-64"
    )


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (elf(EM["x86-64"], e_type=ET_EXEC), "an ELF executable"),
        (elf(EM["x86-64"], e_type=1), "an ELF object file"),
        (b"hello, world\n", "a text file"),
        (b"#!/bin/sh\necho hi\n", "a script"),
        (b"!<arch>\nmember/", "a static library (ar archive)"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "a file of unknown format"),
    ],
)
def test_what_is_not_a_shared_library_is_named(data: bytes, kind: str) -> None:
    assert problem(data) == (
        f"not a shared library ({kind}); "
        "build it as a shared library (-shared in C, crate-type cdylib in Rust)"
    )


def test_a_java_class_file_is_not_taken_for_a_universal_binary() -> None:
    java = b"\xca\xfe\xba\xbe\x00\x00\x00\x41" + bytes(8)
    assert identify(java).target is None


def test_truncated_headers_do_not_raise() -> None:
    full = elf(EM["x86-64"]) + macho() + pe()
    for end in range(len(full)):
        identify(full[:end])


def test_forged_offsets_in_a_file_are_a_short_read(tmp_path: Path) -> None:
    # e_phoff at the end of the 64-bit range, one program header: nothing to find there.
    data = bytearray(elf(EM["x86-64"]))
    struct.pack_into("<Q", data, 32, 2**64 - 1)
    struct.pack_into("<HH", data, 54, 56, 1)
    path = tmp_path / "forged.so"
    path.write_bytes(bytes(data))
    assert binfmt.read_header(path) == Header("shared library", X86_64)


def test_load_problem_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "arm.so"
    path.write_bytes(elf(EM["aarch64"]))
    assert load_problem(path, X86_64) == (
        f"cannot load {path}: built for aarch64, this host is x86-64; build the plugin for x86-64"
    )
    assert load_problem(path, AARCH64) is None


def test_load_problem_of_a_directory_never_opens_it(tmp_path: Path) -> None:
    assert load_problem(tmp_path) == (
        f"cannot load {tmp_path}: a directory; point the plugin at its library file"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlink_loop_and_broken_symlink(tmp_path: Path) -> None:
    loop = tmp_path / "loop.so"
    os.symlink(loop.name, loop)
    assert load_problem(loop) == f"symlink loop at {loop}; point the link at a plugin library file"
    dangling = tmp_path / "dangling.so"
    os.symlink("gone.so", dangling)
    assert load_problem(dangling) == (
        f"broken symlink at {dangling} -> gone.so; point the link at an existing file"
    )


def test_the_host_target_is_this_process() -> None:
    host = binfmt.host_target()
    assert host.bits == struct.calcsize("P") * 8
    assert host.little_endian == (sys.byteorder == "little")
    if sys.platform.startswith("linux"):
        # The interpreter running this test is built for this host by definition.
        assert binfmt.read_header(Path(sys.executable).resolve()).target == host
