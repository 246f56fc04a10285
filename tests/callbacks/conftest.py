"""Fixtures for the host.model.* tests: hosts over real plugin files, the model server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from cliproxy_host import PluginHost
from tests.conftest import REPO, CompilePlugin, HostFactory, build_rust_plugin

PP_SRC = REPO / "tests" / "pipeline" / "plugins" / "pipeplugin.c"
SERVER_CAPS = (
    '"executor":true,"model_provider":true,'
    '"executor_input_formats":["openai"],"executor_output_formats":["openai"]'
)

MakeHost = Callable[..., PluginHost]


@pytest.fixture
def make_host(host_factory: HostFactory) -> Iterator[MakeHost]:
    """make_host({"id": library}, isolated=bool, depth=N, entries={"id": {...}}) -> a host.

    Further keyword arguments go to PluginHost. Every host is closed after the test.
    """
    hosts: list[PluginHost] = []

    def make(
        plugins: Mapping[str, Path],
        *,
        isolated: bool = False,
        depth: int | None = None,
        entries: Mapping[str, Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> PluginHost:
        for pid, lib in plugins.items():
            host_factory.add(pid, lib)
        path = host_factory.write_config(
            {
                pid: {
                    "enabled": True,
                    "isolation": "process" if isolated else "inprocess",
                    **(entries or {}).get(pid, {}),
                }
                for pid in plugins
            }
        )
        if depth is not None:
            text = path.read_text().replace(
                "plugins:\n", f"plugins:\n  model-call-depth: {depth}\n"
            )
            path.write_text(text)
        host = PluginHost.from_config(path, **kwargs)
        hosts.append(host)
        missing = [pid for pid in plugins if host.registration(pid) is None]
        assert not missing, [host.plugin(pid) for pid in missing]
        return host

    yield make
    for host in hosts:
        host.close()


@pytest.fixture
def server(compile_plugin: CompilePlugin) -> Path:
    """The second plugin: serves model "inner", appending "|server:executor.execute"."""
    return compile_plugin(
        source=PP_SRC,
        PP_NAME="server",
        PP_CAPS=SERVER_CAPS,
        PP_MODELS='{"Provider":"srv","Models":[{"ID":"inner"}]}',
    )


BUS_SRC = REPO / "tests" / "plugins" / "busplugin.c"
BusLib = Callable[..., Path]
BusHost = Callable[..., PluginHost]


@pytest.fixture
def bus_c(compile_plugin: CompilePlugin) -> BusLib:
    """bus_c("name", subscriptions=[...], services=[(name, version)], **knobs) -> a build of
    tests/plugins/busplugin.c (relay.host, relay.echo, event.handle, relay.events)."""

    def build(
        name: str,
        *,
        subscriptions: list[str] | None = None,
        services: list[tuple[str, str]] | None = None,
        **knobs: Any,
    ) -> Path:
        extra = ""
        if subscriptions is not None:
            extra += ',"Subscriptions":[' + ",".join(f'"{s}"' for s in subscriptions) + "]"
        if services is not None:
            extra += (
                ',"Services":['
                + ",".join(f'{{"Name":"{n}","Version":"{v}"}}' for n, v in services)
                + "]"
            )
        return compile_plugin(source=BUS_SRC, BP_NAME=name, BP_REG_EXTRA=extra, **knobs)

    return build


@pytest.fixture(scope="session")
def bus_rust() -> Path:
    """tests/plugins/bus-rust: Subscriptions ["rust.*"], the service kv 2, relay.host."""
    return build_rust_plugin("bus-rust")


@pytest.fixture
def bus_host(host_factory: HostFactory) -> Iterator[BusHost]:
    """bus_host({"id": library}, entries={"id": {...}}, plugins={...}, isolated={"id"})
    -> a loaded host; `plugins` adds keys to the plugins section. Closed after the test."""
    hosts: list[PluginHost] = []

    def make(
        libraries: Mapping[str, Path],
        *,
        entries: Mapping[str, Mapping[str, Any]] | None = None,
        plugins: Mapping[str, Any] | None = None,
        isolated: frozenset[str] | set[str] = frozenset(),
    ) -> PluginHost:
        for pid, lib in libraries.items():
            host_factory.add(pid, lib)
        configs = {
            pid: {
                "enabled": True,
                "isolation": "process" if pid in isolated else "inprocess",
                **(entries or {}).get(pid, {}),
            }
            for pid in libraries
        }
        doc = {
            "plugins": {"enabled": True, "dir": "plugins", **(plugins or {}), "configs": configs}
        }
        with host_factory.config_path.open("w", encoding="utf-8") as fh:
            YAML().dump(doc, fh)
        host = PluginHost.from_config(host_factory.config_path)
        hosts.append(host)
        missing = [pid for pid in libraries if host.registration(pid) is None]
        assert not missing, [host.plugin(pid) for pid in missing]
        return host

    yield make
    for host in hosts:
        host.close()


def relay(host: PluginHost, plugin_id: str, method: str, request: Mapping[str, Any]) -> Any:
    """The result of host callback `method` called by plugin `plugin_id` (relay.host)."""
    return host.call(plugin_id, "relay.host", {"method": method, "request": dict(request)})


def wait_for(probe: Callable[[], Any], *, timeout: float = 5.0) -> Any:
    """Poll `probe()` until it answers something truthy (at most `timeout` s, 10 ms apart)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)
