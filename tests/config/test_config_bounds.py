"""Bounds the Go host enforces too (priority is a Go int: int64), and our stale temp files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cliproxy_host.config import ConfigError, ConfigStore, HostConfig


def _priority_file(tmp_path: Path, value: int) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"plugins:\n  configs:\n    x:\n      priority: {value}\n")
    return path


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 123456789012345678901234567890])
def test_a_priority_outside_int64_is_refused_naming_key_and_line(
    tmp_path: Path, value: int
) -> None:
    path = _priority_file(tmp_path, value)
    with pytest.raises(ConfigError) as refused:
        HostConfig.load(path)
    assert f"{path}:4: plugins.configs.x.priority" in str(refused.value)


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_the_int64_bounds_themselves_are_accepted(tmp_path: Path, value: int) -> None:
    assert HostConfig.load(_priority_file(tmp_path, value)).plugin_entry("x").priority == value


def test_stale_temp_files_of_ours_are_removed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("plugins: {}\n")
    stale = tmp_path / ".config.yaml.k3j2h1.tmp"
    fresh = tmp_path / ".config.yaml.a9b8c7.tmp"  # a write in progress by another process
    theirs = tmp_path / ".other.yaml.k3j2h1.tmp"
    for temp in (stale, fresh, theirs):
        temp.write_text("half a config")
    old = time.time() - 120
    for temp in (stale, theirs):
        os.utime(temp, (old, old))
    ConfigStore(path)
    assert not stale.exists()
    assert fresh.exists()
    assert theirs.exists()
