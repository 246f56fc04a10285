"""reconcile.plan: which plugins a config wants loaded, from the files on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.config import HostConfig
from cliproxy_host.host.reconcile import plan


def config(plugins_dir: Path, **plugins: Any) -> HostConfig:
    section: dict[str, Any] = {"enabled": True, "dir": str(plugins_dir), "configs": {}}
    section.update(plugins)
    return HostConfig.from_mapping({"plugins": section})


def drop(plugins_dir: Path, *names: str) -> None:
    plugins_dir.mkdir(exist_ok=True)
    for name in names:
        (plugins_dir / f"{name}{LIBRARY_SUFFIX}").write_bytes(b"")


def test_only_enabled_plugins_with_a_file_are_loaded(tmp_path: Path) -> None:
    drop(tmp_path / "p", "on", "off")
    cfg = config(
        tmp_path / "p",
        configs={"on": {"enabled": True}, "off": {"enabled": False}, "gone": {"enabled": True}},
    )
    steps = plan(cfg, {})
    assert sorted(steps.load) == ["on"]
    assert sorted(steps.files) == ["off", "on"]
    assert (steps.retire, steps.restart, steps.reconfigure) == ([], [], [])


def test_plugins_off_loads_nothing(tmp_path: Path) -> None:
    drop(tmp_path / "p", "on")
    cfg = config(tmp_path / "p", enabled=False, configs={"on": {"enabled": True}})
    assert plan(cfg, {}).load == {}


def test_a_pinned_version_selects_its_file(tmp_path: Path) -> None:
    drop(tmp_path / "p", "x-v1.0.0", "x-v2.0.0")
    cfg = config(tmp_path / "p", configs={"x": {"enabled": True, "store": {"version": "1.0.0"}}})
    assert plan(cfg, {}).load["x"].version == "1.0.0"
    unpinned = config(tmp_path / "p", configs={"x": {"enabled": True}})
    assert plan(unpinned, {}).load["x"].version == "2.0.0"
