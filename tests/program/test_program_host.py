"""A plugin program through the whole host: config, dispatch, listing, hot reload, the API."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cliproxy_host.host.facade import PluginHost

from ..conftest import HostFactory
from ..serverutil import RunningServer, run_server, wait_until

KNOBS = Path(__file__).resolve().parents[1] / "plugins" / "programs" / "knobs.py"


def program_entry(script: Path, **extra: object) -> dict[str, object]:
    return {"enabled": True, "command": [sys.executable, script.name], "cwd": "scripts", **extra}


@pytest.fixture
def script(host_factory: HostFactory) -> Path:
    scripts = host_factory.root / "scripts"
    scripts.mkdir()
    return Path(shutil.copy(KNOBS, scripts / "knobs.py"))


def test_a_program_and_a_library_dispatch_by_priority(
    script: Path, testplugin: Path, host_factory: HostFactory
) -> None:
    host_factory.add("tp", testplugin)
    for high, expected in (("prog", "knobs"), ("tp", "testplugin")):
        host_factory.write_config(
            configs={
                "prog": program_entry(script, priority=10 if high == "prog" else 0),
                "tp": {"enabled": True, "priority": 10 if high == "tp" else 0},
            }
        )
        with PluginHost.from_config(host_factory.config_path) as host:
            assert host.dispatch("executor.identifier", {}) == {"identifier": expected}
            assert host.call("prog", "echo", {"a": 1}) == {"a": 1}


def test_a_program_is_listed_with_its_script_and_state(
    script: Path, host_factory: HostFactory
) -> None:
    host_factory.write_config(configs={"prog": program_entry(script)})
    with PluginHost.from_config(host_factory.config_path) as host:
        info = host.plugin("prog")
        assert info is not None
        assert (info.registered, info.isolation, info.state) == (True, "program", "running")
        assert info.path == str(script.resolve())
        assert info.version == "1.0.0"


def test_a_changed_script_or_command_restarts_the_program(
    script: Path, host_factory: HostFactory
) -> None:
    host_factory.write_config(configs={"prog": program_entry(script)})
    with PluginHost.from_config(host_factory.config_path) as host:
        first = host.call("prog", "pid", {})["pid"]
        script.write_text(script.read_text() + "\n# changed\n")
        host.apply(host_factory_config(host_factory))
        second = host.call("prog", "pid", {})["pid"]
        assert second != first
        host_factory.write_config(
            configs={"prog": program_entry(script, env={"KNOB_VALUE": "new"})}
        )
        host.apply(host_factory_config(host_factory))
        assert host.call("prog", "env", {})["KNOB_VALUE"] == "new"
        assert host.call("prog", "pid", {})["pid"] not in (first, second)


def host_factory_config(host_factory: HostFactory):  # type: ignore[no-untyped-def]
    from cliproxy_host.config import HostConfig  # noqa: PLC0415

    return HostConfig.load(host_factory.config_path)


def test_a_program_that_fails_to_start_leaves_the_others_serving(
    script: Path, testplugin: Path, host_factory: HostFactory
) -> None:
    host_factory.add("tp", testplugin)
    host_factory.write_config(
        configs={
            "prog": program_entry(script, env={"KNOB_HELLO": "wrong-id"}),
            "tp": {"enabled": True},
        }
    )
    with PluginHost.from_config(host_factory.config_path) as host:
        assert host.call("tp", "echo", {"a": 1}) == {"a": 1}
        info = host.plugin("prog")
        assert info is not None
        assert not info.registered
        assert "said it is plugin 'someone-else'" in (info.error or "")


@pytest.fixture
def server(script: Path, host_factory: HostFactory) -> Iterator[RunningServer]:
    host_factory.write_config(configs={"prog": program_entry(script, env={"KNOB_VALUE": "x"})})
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        yield running


URL = "/v0/management/plugins/prog/config"


@pytest.mark.parametrize("key", ["command", "cwd", "env"])
@pytest.mark.parametrize("verb", ["PUT", "PATCH"])
def test_the_management_api_refuses_to_set_what_the_host_runs(
    server: RunningServer, key: str, verb: str
) -> None:
    body = {"enabled": True, key: ["/bin/sh", "-c", "evil"] if key == "command" else "x"}
    response = server.client.request(verb, URL, json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_config"
    assert f"plugins.configs.prog.{key}: set only in the config file" in response.json()["message"]
    assert "evil" not in server.service.config_path.read_text()


def test_the_management_api_hides_and_keeps_what_the_host_runs(
    server: RunningServer, host_factory: HostFactory
) -> None:
    shown = server.client.get(URL).json()
    assert shown == {"enabled": True}
    assert server.client.put(URL, json={"enabled": True, "mode": "y"}).status_code == 200
    entry = server.service.config.plugin_entry("prog")
    assert entry.command == [sys.executable, "knobs.py"]
    assert entry.env == {"KNOB_VALUE": "x"}
    wait_until(lambda: getattr(server.service.host.plugin("prog"), "registered", False), 20)
