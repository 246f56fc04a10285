"""`isolation: process` through the whole host: config, dispatch, listing, fuse and re-enable."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cliproxy_host import errors
from cliproxy_host.backends.isolated import core_build
from cliproxy_host.host.facade import PluginHost

from ..conftest import HostFactory
from ..serverutil import RunningServer, run_server, wait_until

ISOLATED = {"enabled": True, "isolation": "process", "timeout_ms": 2000}


@pytest.fixture(autouse=True, params=["native-core", "python-lines"])
def worker_core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways a worker serves its call lines: in C (the native line core) and in Python."""
    if request.param == "python-lines":
        monkeypatch.setattr(core_build, "line_core", lambda: None)
    else:
        assert core_build.line_core() is not None, "the native line core did not build"


@pytest.fixture
def host(testplugin: Path, host_factory: HostFactory) -> Iterator[PluginHost]:
    host_factory.add("tp", testplugin)
    host_factory.write_config(configs={"tp": ISOLATED})
    with PluginHost.from_config(host_factory.config_path) as running:
        yield running


def test_an_isolated_plugin_serves_like_an_in_process_one(host: PluginHost) -> None:
    info = host.plugins()[0]
    assert (info.registered, info.isolation, info.state) == (True, "process", "running")
    assert host.call("tp", "echo", {"a": 1}) == {"a": 1}
    assert host.dispatch("executor.identifier", {}) == {"identifier": "testplugin"}


def test_a_crash_is_a_typed_error_and_the_host_keeps_serving(host: PluginHost) -> None:
    first_pid = host.call("tp", "pid", {})["pid"]
    with pytest.raises(errors.PluginError) as info:
        host.call("tp", "segfault", {})
    assert info.value.code == "plugin_crashed"
    assert "SIGSEGV" in info.value.message
    assert info.value.plugin_id == "tp"
    assert host.call("tp", "pid", {})["pid"] != first_pid  # a new worker
    listed = host.plugins()[0]
    assert listed.restarts >= 1
    assert listed.last_signal == "SIGSEGV"


def test_a_hung_call_times_out_and_the_worker_comes_back(host: PluginHost) -> None:
    with pytest.raises(errors.PluginError) as info:
        host.call("tp", "hang", {})
    assert info.value.code == "plugin_timeout"
    assert host.call("tp", "echo", {"back": True}) == {"back": True}


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_spin_us_from_the_config_reaches_the_worker(
    testplugin: Path, host_factory: HostFactory
) -> None:
    host_factory.add("tp", testplugin)
    host_factory.write_config(configs={"tp": ISOLATED})
    text = host_factory.config_path.read_text()
    host_factory.config_path.write_text(text.replace("plugins:\n", "plugins:\n  spin-us: 0\n", 1))
    with PluginHost.from_config(host_factory.config_path) as host:
        pid = host.call("tp", "pid", {})["pid"]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--spin-us") + 1] == b"0"
        assert host.call("tp", "echo", {"a": 1}) == {"a": 1}


@pytest.fixture
def fusing_server(testplugin: Path, host_factory: HostFactory) -> Iterator[RunningServer]:
    host_factory.add("tp", testplugin)
    host_factory.write_config(configs={"tp": ISOLATED})
    text = host_factory.config_path.read_text()
    host_factory.config_path.write_text(
        text.replace("plugins:\n", "plugins:\n  fuse-crashes: 2\n  breaker-failures: 100\n", 1)
    )
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        yield running


def test_a_fused_plugin_is_listed_and_an_operator_can_re_enable_it(
    fusing_server: RunningServer,
) -> None:
    host = fusing_server.service.host
    for _ in range(2):
        with pytest.raises(errors.PluginError):
            host.call("tp", "abort", {})
    wait_until(lambda: host.plugins()[0].state == "fused")
    with pytest.raises(errors.PluginError) as info:
        host.call("tp", "echo", {})
    assert info.value.code == "plugin_unavailable"
    entry = fusing_server.client.get("/v0/management/plugins").json()["plugins"][0]
    assert entry["state"] == "fused"
    assert entry["last_signal"] == "SIGABRT"
    response = fusing_server.client.patch(
        "/v0/management/plugins/tp/enabled", json={"enabled": True}
    )
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "running"
    assert host.call("tp", "echo", {"again": 1}) == {"again": 1}
