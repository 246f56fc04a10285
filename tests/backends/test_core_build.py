"""The native line core: built on first use into a cache keyed by its source, or a fallback."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from cliproxy_host.backends.isolated import core_build


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "cliproxy-host"


def test_the_core_is_built_once_into_the_cache(
    fresh_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc is not None, "tests build C plugins: a C compiler is needed"
    first = core_build.line_core()
    assert first is not None
    assert first.parent == fresh_cache
    assert first.name.startswith("linecore-")
    assert first.read_bytes()[:4] == b"\x7fELF"
    stamp = first.stat().st_mtime_ns
    assert core_build.line_core() == first
    assert first.stat().st_mtime_ns == stamp  # not built again
    assert [p.name for p in fresh_cache.iterdir()] == [first.name]  # no partial file left
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_without_a_compiler_the_host_says_so_once_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CC", "no-such-cc-for-cliproxy")
    caplog.set_level(logging.WARNING, logger=core_build.__name__)
    assert core_build.line_core() is None
    assert core_build.line_core() is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "no C compiler (no-such-cc-for-cliproxy)" in warnings[0]
    assert "linecore.c" in warnings[0]
    assert "serve calls in Python" in warnings[0]


def test_a_compiler_that_fails_is_reported_with_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "brokencc"
    broken.write_text("#!/bin/sh\necho 'brokencc: cannot compile today' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    caplog.set_level(logging.WARNING, logger=core_build.__name__)
    assert core_build.line_core() is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "(exit 3)" in warnings[0]
    assert "brokencc: cannot compile today" in warnings[0]
