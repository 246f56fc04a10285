"""Fixtures for the host.model.* tests: hosts over real plugin files, the model server."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host import PluginHost
from tests.conftest import REPO, CompilePlugin, HostFactory

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
