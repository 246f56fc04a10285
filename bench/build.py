"""Compile the plugins the benchmarks load, with cc, into build/bench (cached by content)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from ruamel.yaml import YAML

from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.discovery import platform_tag

REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO / "build" / "bench"
INCLUDES = (REPO / "include", REPO / "cliproxy_host" / "scaffold" / "templates" / "c" / "include")

BENCH_PLUGIN_SRC = REPO / "bench" / "plugins" / "bench_plugin.c"
PIPELINE_PLUGIN_SRC = REPO / "bench" / "plugins" / "pipeline_plugin.c"
SIMPLE_C_SRC = REPO / "examples" / "c" / "simple_c.c"
TESTPLUGIN_SRC = REPO / "tests" / "plugins" / "testplugin.c"
STREAMPLUGIN_SRC = REPO / "tests" / "plugins" / "streamplugin.c"
CHATEXEC_SRC = REPO / "tests" / "plugins" / "chatexec.c"

CFLAGS = ("-shared", "-fPIC", "-O2", "-pthread", "-Wall", "-Wextra", "-fvisibility=hidden")
PROGRAM_CFLAGS = ("-O2", "-pthread", "-Wall", "-Wextra")
PINGPONG_SRC = REPO / "bench" / "baselines" / "pingpong.c"


def compiler() -> str:
    return shutil.which("cc") or shutil.which("gcc") or "cc"


def compile_plugin(source: Path, name: str, *flags: str, build_dir: Path = BUILD_DIR) -> Path:
    """Compile one C plugin; reuse the library if neither its sources nor flags changed."""
    return _compile(source, name, (*CFLAGS, *flags), LIBRARY_SUFFIX, build_dir)


def compile_program(source: Path, name: str) -> Path:
    """Compile one C program (a baseline of its own); reused as compile_plugin's are."""
    return _compile(source, name, PROGRAM_CFLAGS, "", BUILD_DIR)


def _compile(source: Path, name: str, flags: tuple[str, ...], suffix: str, build_dir: Path) -> Path:
    digest = hashlib.sha256()
    digest.update("\0".join(flags).encode())
    # The headers beside the source count too (tests/plugins/plugin_common.h, included
    # with quotes): a change to one rebuilds the plugins that include it.
    dirs = (*INCLUDES, source.parent)
    for dep in (source, *(d / h for d in dirs for h in sorted(os.listdir(d)) if h.endswith(".h"))):
        digest.update(dep.read_bytes())
    out = build_dir / f"{name}-{digest.hexdigest()[:12]}{suffix}"
    if out.is_file():
        return out
    build_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    includes = [arg for d in INCLUDES for arg in ("-I", str(d))]
    cmd = [compiler(), *flags, *includes, "-o", str(tmp), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling {source} failed:\n{' '.join(cmd)}\n{proc.stderr}")
    tmp.replace(out)  # atomic: a concurrent run never loads a half-written file
    return out


def bench_plugin() -> Path:
    return compile_plugin(BENCH_PLUGIN_SRC, "bench_plugin")


def pingpong() -> Path:
    """Two processes calling each other over shared memory, in C (figure 3's ceiling)."""
    return compile_program(PINGPONG_SRC, "pingpong")


def stream_plugin() -> Path:
    return compile_plugin(STREAMPLUGIN_SRC, "streamplugin")


def chatexec() -> Path:
    """A model executor streaming protocol events from a thread of its own (figure 9)."""
    return compile_plugin(CHATEXEC_SRC, "chatexec")


def pipeline_plugin(*, interceptor: bool) -> Path:
    """A pass-through request interceptor, or a pass-through executor (figure 7)."""
    if interceptor:
        return compile_plugin(PIPELINE_PLUGIN_SRC, "pipeline-interceptor", "-DBP_INTERCEPTOR")
    return compile_plugin(PIPELINE_PLUGIN_SRC, "pipeline-executor")


def simple_c() -> Path:
    return compile_plugin(SIMPLE_C_SRC, "simple-c")


def copy_library(library: Path, dest: Path) -> Path:
    """A private copy: a library opened under another path is a separate load, with its
    own globals (dlopen of the same path would share one)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(library, dest)
    return dest


class HostDir:
    """A plugins dir and a YAML config under `root`, as an operator would lay them out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        os_name, arch = platform_tag()
        self.arch_dir = root / "plugins" / os_name / arch
        self.arch_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "config.yaml"
        self.configs: dict[str, dict[str, Any]] = {}

    def add(self, plugin_id: str, library: Path, **config: Any) -> Path:
        dest = copy_library(library, self.arch_dir / f"{plugin_id}{LIBRARY_SUFFIX}")
        self.configs[plugin_id] = {"enabled": True, **config}
        return dest

    def write_config(
        self,
        extra: Mapping[str, Any] | None = None,
        plugins_settings: Mapping[str, Any] | None = None,
    ) -> Path:
        plugins = {"enabled": True, "dir": "plugins", **(plugins_settings or {})}
        doc: dict[str, Any] = {
            "plugins": {**plugins, "configs": self.configs},
            **(extra or {}),
        }
        # round-trip through JSON: plain dicts and lists only, as a person would write
        doc = orjson.loads(orjson.dumps(doc))
        with self.config_path.open("w", encoding="utf-8") as fh:
            YAML().dump(doc, fh)
        return self.config_path
