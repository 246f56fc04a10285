"""Shared fixtures: build the example plugins and compile test plugins with failure knobs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.discovery import platform_tag

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))

import build as example_build  # noqa: E402

TESTPLUGIN_SRC = REPO / "tests" / "plugins" / "testplugin.c"
# cliproxy_example.h: the C helpers shared by the examples, test plugins and scaffolds.
C_HELPERS = REPO / "cliproxy_host" / "scaffold" / "templates" / "c" / "include"
# Reused between runs so a second `make test` only rebuilds what changed.
BUILD_CACHE = REPO / "build" / "test"

CompilePlugin = Callable[..., Path]


@pytest.fixture(scope="session")
def examples() -> dict[str, Path]:
    """The C and Rust example plugins, built from source for this run, less echo-c (the
    quick start's executor, fixture `echo_c`): the tests that load every example pin
    the list of the others."""
    built = {**example_build.build_c(BUILD_CACHE), **example_build.build_rust(BUILD_CACHE)}
    for pid, path in built.items():
        assert path.is_file(), f"{pid}: build did not produce {path}"
    del built["echo-c"]
    return built


@pytest.fixture(scope="session")
def echo_c(examples: dict[str, Path]) -> Path:
    """examples/c/echo_c.c, built with the other C examples."""
    path = BUILD_CACHE / "c" / f"echo-c{LIBRARY_SUFFIX}"
    assert path.is_file(), f"echo-c: build did not produce {path}"
    return path


def build_rust_plugin(crate: str) -> Path:
    """Build tests/plugins/<crate> with cargo, offline (no crates), into the build cache; the
    library's path. The crates share rust-common/plugin.rs (included with #[path])."""
    target = BUILD_CACHE / crate
    manifest = REPO / "tests" / "plugins" / crate / "Cargo.toml"
    cmd = ["cargo", "build", "--release", "--offline", "--quiet", "--manifest-path", str(manifest)]
    subprocess.run(
        [*cmd, "--target-dir", str(target)], check=True, capture_output=True, text=True, timeout=600
    )
    prefix = "" if sys.platform == "win32" else "lib"
    return target / "release" / f"{prefix}{crate.replace('-', '_')}{LIBRARY_SUFFIX}"


def _define_flag(name: str, value: Any) -> str:
    if value is True:
        return f"-D{name}"
    if isinstance(value, str | Path):
        escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'-D{name}="{escaped}"'
    return f"-D{name}={value}"


@pytest.fixture(scope="session")
def compile_plugin(tmp_path_factory: pytest.TempPathFactory) -> CompilePlugin:
    """Compile tests/plugins/testplugin.c with knobs, e.g. compile_plugin(TP_INIT_RC=2).

    Each distinct set of knobs is compiled once per session.
    """
    out_dir = tmp_path_factory.mktemp("testplugins")
    cache: dict[str, Path] = {}
    lock = threading.Lock()
    cc = shutil.which("cc") or shutil.which("gcc") or "cc"

    def compile_(source: Path = TESTPLUGIN_SRC, **knobs: Any) -> Path:
        flags = sorted(_define_flag(k, v) for k, v in knobs.items())
        key = hashlib.sha256("\0".join([str(source), *flags]).encode()).hexdigest()[:16]
        with lock:
            if key in cache:
                return cache[key]
            out = out_dir / f"tp-{key}{LIBRARY_SUFFIX}"
            cmd = [
                cc,
                "-shared",
                "-fPIC",
                "-O1",
                "-pthread",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-I",
                str(REPO / "include"),
                "-I",
                str(C_HELPERS),
                *flags,
                "-o",
                str(out),
                str(source),
            ]
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            cache[key] = out
            return out

    return compile_


class HostFactory:
    """Writes a real plugins dir and YAML config under a temp dir, for PluginHost to load."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.plugins_dir = root / "plugins"
        os_name, arch = platform_tag()
        self.arch_dir = self.plugins_dir / os_name / arch
        self.arch_dir.mkdir(parents=True)
        self.config_path = root / "config.yaml"

    def add(self, plugin_id: str, library: Path, *, version: str | None = None) -> Path:
        name = f"{plugin_id}-v{version}" if version else plugin_id
        dest = self.arch_dir / f"{name}{LIBRARY_SUFFIX}"
        shutil.copyfile(library, dest)
        return dest

    def write_config(
        self,
        configs: Mapping[str, Mapping[str, Any]],
        *,
        enabled: bool = True,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        doc: dict[str, Any] = {
            "plugins": {"enabled": enabled, "dir": "plugins", "configs": dict(configs)},
            **(extra or {}),
        }
        with self.config_path.open("w", encoding="utf-8") as fh:
            YAML().dump(doc, fh)
        return self.config_path


@pytest.fixture
def host_factory(tmp_path: Path) -> HostFactory:
    return HostFactory(tmp_path)


@pytest.fixture
def testplugin(compile_plugin: CompilePlugin) -> Path:
    """The well-behaved test plugin, with a shutdown function."""
    return compile_plugin(TP_WITH_SHUTDOWN=True)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file the test plugin appends its lifecycle events to (knob TP_MARKER)."""
    return tmp_path / "marker.txt"
