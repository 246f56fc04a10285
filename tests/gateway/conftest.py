"""A real server (uvicorn on 127.0.0.1) with real C and Rust plugins, for the /v1 tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from ..conftest import REPO, CompilePlugin, HostFactory, build_rust_plugin
from ..host.streamutil import build_stream_rust, stream_plugin
from ..serverutil import RunningServer, run_server

CHATEXEC_SRC = REPO / "tests" / "plugins" / "chatexec.c"
KEY = "client-key-0123456789"
OTHER_KEY = "client-key-limited-98765"

ServerFactory = Callable[..., AbstractContextManager[RunningServer]]


@pytest.fixture(scope="session")
def stream_rust() -> Path:
    return build_stream_rust()


@pytest.fixture(scope="session")
def upstream_rust() -> Path:
    return build_rust_plugin("upstream-rust")


@pytest.fixture
def gateway(
    *,
    host_factory: HostFactory,
    examples: dict[str, Path],
    compile_plugin: CompilePlugin,
    testplugin: Path,
    stream_rust: Path,
    upstream_rust: Path,
) -> ServerFactory:
    """gateway(api_keys, plugins=...) starts the server with these plugins (IDs of
    simple-c, simple-rust, sp (C stream plugin), stream-rust, tp (test plugin), chat-c (a
    model executor, tests/plugins/chatexec.c), up-rust (a Rust model executor calling an
    upstream)) enabled; `extra` adds top-level config sections (e.g. `http`)."""
    libraries = {
        "simple-c": examples["simple-c"],
        "simple-rust": examples["simple-rust"],
        "sp": stream_plugin(compile_plugin),
        "stream-rust": stream_rust,
        "tp": testplugin,
        "chat-c": compile_plugin(CHATEXEC_SRC),
        "up-rust": upstream_rust,
    }

    @contextmanager
    def start(
        api_keys: Sequence[Any] | None,
        plugins: Sequence[str] = ("simple-c",),
        entries: Mapping[str, Mapping[str, Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Iterator[RunningServer]:
        for plugin_id in plugins:
            host_factory.add(plugin_id, libraries[plugin_id])
        configs = {p: {"enabled": True, **(entries or {}).get(p, {})} for p in plugins}
        sections = {**(extra or {})}
        if api_keys is not None:
            sections["api-keys"] = list(api_keys)
        config = host_factory.write_config(configs, extra=sections)
        with run_server(config) as server:
            assert server.service.wait_ready(30)
            for plugin_id in plugins:
                assert server.service.host.registration(plugin_id) is not None, plugin_id
            yield server

    return start


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
