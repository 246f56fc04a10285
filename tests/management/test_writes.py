"""One management write, one apply; one ID, one lookup; the error tree as the API answers it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host import errors
from cliproxy_host.host.facade import PluginHost, PluginInfo
from cliproxy_host.management.plugin_routes import PluginRoutes

from ..conftest import HostFactory
from ..host.apply_counter import ApplyCounter
from ..serverutil import RunningServer, run_server, wait_until


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> ApplyCounter:
    return ApplyCounter(monkeypatch)


@pytest.fixture
def server(
    examples: dict[str, Path], host_factory: HostFactory, counter: ApplyCounter
) -> Iterator[RunningServer]:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True, "mode": "safe"}})
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        counter.reset()
        yield running


def error_of(response: Any) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error", "message"}
    return response.status_code, body["error"], body["message"]


def test_one_patch_applies_the_config_once(server: RunningServer, counter: ApplyCounter) -> None:
    response = server.client.patch("/v0/management/plugins/simple-c/config", json={"mode": "fast"})
    assert response.status_code == 200, response.text
    # The watcher has handed over the server's own write, and nothing was applied for it.
    wait_until(counter.saw_config_write)
    assert counter.applies == 1


def test_one_id_is_looked_up_without_listing_every_plugin(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    listings: list[int] = []
    plugins = PluginHost.plugins

    def counted(host: PluginHost) -> list[PluginInfo]:
        listings.append(1)
        return plugins(host)

    monkeypatch.setattr(PluginHost, "plugins", counted)
    assert server.client.get("/v0/management/plugins/simple-c/config").status_code == 200
    assert server.client.get("/v0/management/plugins/ghost/config").status_code == 404
    assert server.client.delete("/v0/management/plugins/ghost").status_code == 404
    assert listings == []
    assert server.client.get("/v0/management/plugins").status_code == 200
    assert listings == [1]


def test_an_invalid_id_is_invalid_plugin_id(server: RunningServer) -> None:
    response = server.client.get("/v0/management/plugins/-x/config")
    assert error_of(response) == (400, "invalid_plugin_id", "'-x' is not a valid plugin ID")


def test_an_unknown_id_is_plugin_not_found(server: RunningServer) -> None:
    status, code, message = error_of(server.client.get("/v0/management/plugins/ghost/config"))
    assert (status, code) == (404, "plugin_not_found")
    plugins_dir = server.service.config.plugins_dir()
    assert message == f"no plugin ghost under {plugins_dir} or in the config"


def test_a_broken_config_file_is_invalid_config(server: RunningServer) -> None:
    server.service.config_path.write_text("plugins: [not, a, mapping]\n")
    response = server.client.patch("/v0/management/plugins/simple-c/config", json={"x": 1})
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_config")
    assert "plugins" in message


def test_a_failed_save_is_config_save_failed(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(server.service.config_path)

    def refuse(*args: object) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("cliproxy_host.config.schema.os.replace", refuse)
    response = server.client.patch(
        "/v0/management/plugins/simple-c/enabled", json={"enabled": False}
    )
    assert error_of(response) == (500, "config_save_failed", f"Permission denied: {path}")


def test_a_failing_plugin_route_is_plugin_error(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = errors.PluginTimeout(
        "took too long", plugin_id="simple-c", method="management.handle"
    )

    def fail(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(PluginRoutes, "handle", fail)
    response = server.client.get("/v0/management/simple-c/status")
    assert error_of(response) == (502, "plugin_error", str(failure))
