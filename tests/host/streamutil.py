"""Shared pieces of the stream tests: the C stream plugin, a host loading it, bounded waits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cliproxy_host.host.facade import PluginHost

from ..conftest import REPO, CompilePlugin, HostFactory, build_rust_plugin

STREAMPLUGIN_SRC = REPO / "tests" / "plugins" / "streamplugin.c"


def stream_plugin(compile_plugin: CompilePlugin) -> Path:
    return compile_plugin(STREAMPLUGIN_SRC)


@contextmanager
def stream_host(
    host_factory: HostFactory, library: Path, plugin_id: str = "sp", **entry: Any
) -> Iterator[PluginHost]:
    host_factory.add(plugin_id, library)
    host_factory.write_config(configs={plugin_id: {"enabled": True, **entry}})
    with PluginHost.from_config(host_factory.config_path) as host:
        assert host.registration(plugin_id) is not None, host.plugins()
        yield host


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def stats(host: PluginHost, plugin_id: str = "sp") -> Mapping[str, Any]:
    result: Mapping[str, Any] = host.call(plugin_id, "stats", {})
    return result


def settled(host: PluginHost, plugin_id: str = "sp") -> Mapping[str, Any]:
    """The plugin's counters once none of its emitting threads is running."""
    wait_for(lambda: stats(host, plugin_id)["running"] == 0)
    return stats(host, plugin_id)


def build_stream_rust() -> Path:
    return build_rust_plugin("stream-rust")
