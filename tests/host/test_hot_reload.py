"""Hot reload: hand edits and new plugin files are applied by the running service."""

from __future__ import annotations

import base64
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host import errors
from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.host.service import HostService

from ..conftest import CompilePlugin, HostFactory
from ..serverutil import wait_until


@pytest.fixture
def services() -> Iterator[list[HostService]]:
    made: list[HostService] = []
    yield made
    for service in made:
        service.stop()


def start(config: Path, services: list[HostService]) -> HostService:
    service = HostService(config)
    services.append(service)
    service.start()
    assert service.wait_ready(30)
    return service


def drop(library: Path, dest_dir: Path, name: str) -> Path:
    """Install a plugin file the safe way: copy beside it, then rename into place."""
    dest = dest_dir / f"{name}{LIBRARY_SUFFIX}"
    tmp = dest_dir / f".{dest.name}.tmp"
    shutil.copyfile(library, tmp)
    tmp.replace(dest)
    return dest


def identifier(service: HostService, pid: str = "tp") -> Any:
    try:
        return service.host.call(pid, "executor.identifier", {})["identifier"]
    except errors.PluginError as exc:
        return exc.code


def test_a_hand_edit_of_the_config_is_applied(
    examples: dict[str, Path], host_factory: HostFactory, services: list[HostService]
) -> None:
    host_factory.add("simple-c", examples["simple-c"])
    config = host_factory.config_path
    config.write_text(
        "plugins:\n  enabled: true\n  configs:\n    simple-c:\n      enabled: true\n"
        "      mode: safe  # edit me\n"
    )
    service = start(config, services)

    def mode() -> str:
        out = service.host.call("simple-c", "executor.execute", {"Model": "m", "Payload": ""})
        return str(json.loads(base64.b64decode(out["Payload"]))["mode"])

    assert mode() == "safe"
    config.write_text(config.read_text().replace("mode: safe", "mode: fast"))
    wait_until(lambda: mode() == "fast")


def test_an_invalid_hand_edit_keeps_the_previous_config(
    examples: dict[str, Path],
    host_factory: HostFactory,
    services: list[HostService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True}})
    service = start(host_factory.config_path, services)
    host_factory.config_path.write_text(
        "plugins:\n  enabled: true\n  configs:\n    simple-c:\n      enabled: maybe\n"
    )
    wait_until(lambda: "previous config stays in force" in caplog.text)
    assert service.host.call("simple-c", "executor.identifier", {}) == {"identifier": "simple-c"}
    assert "plugins.configs.simple-c.enabled" in caplog.text


def test_a_plugin_wheel_installed_or_removed_is_taken_without_a_restart(
    compile_plugin: CompilePlugin,
    host_factory: HostFactory,
    services: list[HostService],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    host_factory.write_config(configs={"tp": {"enabled": True}})
    service = start(host_factory.config_path, services)
    assert identifier(service) == "plugin_not_loaded"
    # As pip lays out a wheel: the package (with the library), then its .dist-info.
    package = site / "tp_wheel"
    package.mkdir()
    shutil.copyfile(compile_plugin(TP_NAME="from-wheel"), package / f"libtp{LIBRARY_SUFFIX}")
    info = site / "tp_wheel-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tp_wheel\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text("[cliproxy_host.plugins]\ntp = tp_wheel\n")
    wait_until(lambda: identifier(service) == "from-wheel")
    shutil.rmtree(info)  # pip uninstall
    shutil.rmtree(package)
    wait_until(lambda: identifier(service) == "plugin_not_loaded")


def test_a_new_plugin_file_is_loaded_without_a_restart(
    compile_plugin: CompilePlugin, host_factory: HostFactory, services: list[HostService]
) -> None:
    host_factory.write_config(configs={"tp": {"enabled": True}})
    service = start(host_factory.config_path, services)
    assert identifier(service) == "plugin_not_loaded"
    drop(compile_plugin(TP_NAME="fresh"), host_factory.arch_dir, "tp")
    wait_until(lambda: identifier(service) == "fresh")


def test_a_higher_version_is_swapped_in_while_calls_keep_flowing(
    compile_plugin: CompilePlugin, host_factory: HostFactory, services: list[HostService]
) -> None:
    drop(compile_plugin(TP_NAME="old"), host_factory.arch_dir, "tp-v1.0.0")
    host_factory.write_config(configs={"tp": {"enabled": True}})
    service = start(host_factory.config_path, services)
    per_thread: list[list[Any]] = [[] for _ in range(4)]
    failures: list[BaseException] = []
    stop = threading.Event()

    def caller(seen: list[Any]) -> None:
        while not stop.is_set():
            try:
                seen.append(service.host.call("tp", "executor.identifier", {})["identifier"])
            except BaseException as exc:
                failures.append(exc)
                return

    def total() -> int:
        return sum(len(seen) for seen in per_thread)

    workers = [threading.Thread(target=caller, args=(seen,)) for seen in per_thread]
    for w in workers:
        w.start()
    wait_until(lambda: total() > 100)
    drop(compile_plugin(TP_NAME="new"), host_factory.arch_dir, "tp-v1.1.0")
    wait_until(lambda: all(seen and seen[-1] == "new" for seen in per_thread))
    mark = total()
    wait_until(lambda: total() > mark + 200)
    stop.set()
    for w in workers:
        w.join()
    assert failures == []
    for seen in per_thread:
        # A call that starts after its thread saw the new version never reaches the old one.
        switch = seen.index("new")
        assert set(seen[:switch]) == {"old"}
        assert set(seen[switch:]) == {"new"}
    assert service.host.plugins()[0].version == "1.1.0"


def test_swap_registers_the_new_version_before_retiring_the_old(
    compile_plugin: CompilePlugin,
    host_factory: HostFactory,
    services: list[HostService],
    marker: Path,
) -> None:
    drop(
        compile_plugin(TP_NAME="a", TP_WITH_SHUTDOWN=True, TP_MARKER=marker),
        host_factory.arch_dir,
        "tp-v1.0.0",
    )
    host_factory.write_config(configs={"tp": {"enabled": True}})
    service = start(host_factory.config_path, services)
    drop(
        compile_plugin(TP_NAME="b", TP_WITH_SHUTDOWN=True, TP_MARKER=marker),
        host_factory.arch_dir,
        "tp-v2.0.0",
    )
    wait_until(lambda: identifier(service) == "b")
    wait_until(lambda: marker.read_text().count("shutdown") >= 2)
    assert marker.read_text().split() == [
        "init",
        "register",
        "init",
        "register",
        "plugin.shutdown",
        "shutdown",
    ]


def test_reload_restart_shuts_the_old_version_down_first(
    compile_plugin: CompilePlugin,
    host_factory: HostFactory,
    services: list[HostService],
    marker: Path,
) -> None:
    drop(
        compile_plugin(TP_NAME="a", TP_WITH_SHUTDOWN=True, TP_MARKER=marker),
        host_factory.arch_dir,
        "tp-v1.0.0",
    )
    host_factory.write_config(configs={"tp": {"enabled": True, "reload": "restart"}})
    service = start(host_factory.config_path, services)
    drop(
        compile_plugin(TP_NAME="b", TP_WITH_SHUTDOWN=True, TP_MARKER=marker),
        host_factory.arch_dir,
        "tp-v2.0.0",
    )
    wait_until(lambda: identifier(service) == "b")
    assert marker.read_text().split() == [
        "init",
        "register",
        "plugin.shutdown",
        "shutdown",
        "init",
        "register",
    ]


def test_a_new_version_that_fails_to_load_leaves_the_old_one_serving(
    compile_plugin: CompilePlugin, host_factory: HostFactory, services: list[HostService]
) -> None:
    drop(compile_plugin(TP_NAME="good"), host_factory.arch_dir, "tp-v1.0.0")
    host_factory.write_config(configs={"tp": {"enabled": True}})
    service = start(host_factory.config_path, services)
    drop(compile_plugin(TP_NAME="broken", TP_INIT_RC=3), host_factory.arch_dir, "tp-v1.1.0")
    wait_until(lambda: service.host.plugins()[0].error is not None)
    info = service.host.plugins()[0]
    assert info.error is not None
    assert "returned 3" in info.error
    assert identifier(service) == "good"
