"""Fixtures for the pipeline tests: the stage plugin built with knobs, hosts over real files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host import PluginHost
from tests.conftest import CompilePlugin, HostFactory

PP_SRC = Path(__file__).resolve().parent / "plugins" / "pipeplugin.c"


class CallLog:
    """The lines the stage plugins append: one JSON object per call, in call order."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        return [c for c in lines if method is None or c["method"] == method]

    def order(self, *methods: str) -> list[str]:
        return [f"{c['plugin']}:{c['method']}" for c in self.calls() if c["method"] in methods]


@pytest.fixture
def call_log(tmp_path: Path) -> CallLog:
    return CallLog(tmp_path / "calls.jsonl")


StagePlugin = Callable[..., Path]


@pytest.fixture
def stage(compile_plugin: CompilePlugin, call_log: CallLog) -> StagePlugin:
    """stage("name", "\"request_interceptor\":true", PP_FAIL="...") -> the built library."""

    def build(name: str, caps: str, **knobs: Any) -> Path:
        return compile_plugin(
            source=PP_SRC, PP_NAME=name, PP_CAPS=caps, PP_LOG=str(call_log.path), **knobs
        )

    return build


MakeHost = Callable[..., PluginHost]


@pytest.fixture
def make_host(host_factory: HostFactory) -> Iterator[MakeHost]:
    """make_host({"id": (library, priority)}, isolated={"id"}) -> a loaded PluginHost.

    Plugins named in `isolated` run in a worker process. Every host is closed after the test.
    """
    hosts: list[PluginHost] = []

    def make(
        plugins: Mapping[str, tuple[Path, int]], *, isolated: frozenset[str] = frozenset()
    ) -> PluginHost:
        for pid, (lib, _) in plugins.items():
            host_factory.add(pid, lib)
        path = host_factory.write_config(
            {
                pid: {
                    "enabled": True,
                    "priority": prio,
                    "isolation": "process" if pid in isolated else "inprocess",
                }
                for pid, (_, prio) in plugins.items()
            }
        )
        host = PluginHost.from_config(path)
        hosts.append(host)
        missing = [pid for pid in plugins if host.registration(pid) is None]
        assert not missing, [host.plugin(pid) for pid in missing]
        return host

    yield make
    for host in hosts:
        host.close()


EXECUTOR = (
    '"executor":true,"executor_input_formats":["openai"],"executor_output_formats":["openai"]'
)
