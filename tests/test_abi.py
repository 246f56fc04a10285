"""The cffi declarations come from the header and agree with what a C compiler lays out."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cliproxy_host import abi

FIELDS = {
    "cliproxy_buffer": ("ptr", "len"),
    "cliproxy_host_api": ("abi_version", "host_ctx", "call", "free_buffer"),
    "cliproxy_plugin_api": ("abi_version", "call", "free_buffer", "shutdown"),
}


def test_cdef_is_read_from_the_header_not_a_second_copy() -> None:
    header = abi.header_path().read_text()
    cdef = abi.cdef_source(header)
    for name in FIELDS:
        assert name in cdef
    assert "cliproxy_plugin_init" in cdef
    assert "#" not in cdef, "preprocessor lines must stay outside the CDEF region"


def test_header_version_matches_the_host() -> None:
    header = abi.header_path().read_text()
    match = re.search(r"#define CLIPROXY_ABI_VERSION (\d+)", header)
    assert match is not None
    assert int(match.group(1)) == abi.ABI_VERSION


def test_cdef_without_markers_is_refused() -> None:
    with pytest.raises(RuntimeError, match="CDEF"):
        abi.cdef_source("typedef int x;")


def test_cffi_layout_matches_the_c_compiler(tmp_path: Path) -> None:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        '#include "cliproxy_plugin.h"',
        "int main(void) {",
    ]
    for struct, fields in FIELDS.items():
        lines.append(f'printf("{struct} %zu\\n", sizeof({struct}));')
        for field in fields:
            lines.append(f'printf("{struct}.{field} %zu\\n", offsetof({struct}, {field}));')
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    cc = shutil.which("cc") or "cc"
    subprocess.run([cc, "-I", str(abi.header_path().parent), "-o", str(exe), str(src)], check=True)
    seen = dict(
        line.split() for line in subprocess.check_output([str(exe)], text=True).splitlines()
    )
    for struct, fields in FIELDS.items():
        assert int(seen[struct]) == abi.ffi.sizeof(struct)
        for field in fields:
            assert int(seen[f"{struct}.{field}"]) == abi.ffi.offsetof(struct, field), field


def test_header_compiles_as_cplusplus(tmp_path: Path) -> None:
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / "use.cpp"
    src.write_text(
        '#include "cliproxy_plugin.h"\n'
        'extern "C" CLIPROXY_EXPORT int cliproxy_plugin_init('
        "const cliproxy_host_api*, cliproxy_plugin_api* p) { p->abi_version = 1; return 0; }\n"
    )
    subprocess.run(
        [
            cxx,
            "-shared",
            "-fPIC",
            "-I",
            str(abi.header_path().parent),
            "-o",
            str(tmp_path / "use.so"),
            str(src),
        ],
        check=True,
    )


def test_every_capability_method_has_one_owner() -> None:
    methods = [m for ms in abi.CAPABILITY_METHODS.values() for m in ms]
    assert len(methods) == len(set(methods))
    assert abi.method_mode("request.normalize") is abi.Mode.CHAIN
    assert abi.method_mode("usage.handle") is abi.Mode.BROADCAST
    assert abi.method_mode("executor.execute") is abi.Mode.FIRST


def _run_abi(cache: Path, code: str) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    script = f"import sys; from cliproxy_host import abi; {code}"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_ffi_loads_from_its_cached_module_without_the_c_parser(tmp_path: Path) -> None:
    # pycparser's import and parse were most of an isolated worker's start-up.
    probe = "print(sorted(m for m in ('cffi', 'pycparser') if m in sys.modules))"
    _run_abi(tmp_path, probe)  # the first start emits the module
    assert list((tmp_path / "cliproxy-host").glob("abi_ffi_*.py")), "no module was cached"
    assert _run_abi(tmp_path, probe) == "[]"
    layout = (
        "print(abi.ffi.sizeof('cliproxy_plugin_api'), abi.ffi.offsetof('cliproxy_buffer', 'len'))"
    )
    assert _run_abi(tmp_path, layout) == f"{abi.ffi.sizeof('cliproxy_plugin_api')} 8"


def test_a_damaged_cached_module_is_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = abi.cached_module(abi.declarations())
    target.parent.mkdir(parents=True)
    target.write_text("ffi = (\n")  # cut short, e.g. by a full disk
    assert _run_abi(tmp_path, "print(abi.ffi.sizeof('cliproxy_buffer'))") == "16"


def test_an_unwritable_cache_still_gives_the_ffi(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the cache directory cannot be made under a file
    assert _run_abi(blocked, "print(abi.ffi.sizeof('cliproxy_buffer'))") == "16"
