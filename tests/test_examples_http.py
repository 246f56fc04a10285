"""The example plugins log and make HTTP requests through the host, under the host's policy."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host import errors
from cliproxy_host.host.facade import PluginHost

from .conftest import HostFactory
from .httpserver import LocalServer, serve


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with serve() as running:
        yield running


def start_host(
    factory: HostFactory, examples: dict[str, Path], configs: dict[str, Any], http: dict[str, Any]
) -> PluginHost:
    for pid in configs:
        factory.add(pid, examples[pid])
    factory.write_config(configs=configs, extra={"http": http})
    return PluginHost.from_config(factory.config_path)


def test_http_c_posts_its_payload_through_the_host_and_logs(
    examples: dict[str, Path],
    host_factory: HostFactory,
    server: LocalServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configs = {"http-c": {"enabled": True, "base_url": server.url("/echo")}}
    with (
        caplog.at_level(logging.INFO, logger="cliproxy_host.plugin"),
        start_host(host_factory, examples, configs, {"allowed-hosts": ["127.0.0.1"]}) as host,
    ):
        payload = base64.b64encode(b'{"prompt": "hi"}').decode()
        out = host.call("http-c", "executor.execute", {"Model": "m7", "Payload": payload})
    assert out["Headers"] == {"X-Upstream-Status": ["200"]}
    echoed = json.loads(base64.b64decode(out["Payload"]))
    assert echoed["method"] == "POST"
    assert base64.b64decode(echoed["body"]) == b'{"prompt": "hi"}'
    assert ["X-Plugin", "http-c"] in echoed["headers"]
    logged = [r for r in caplog.records if r.name == "cliproxy_host.plugin.http-c"]
    assert logged
    assert "http-c executing" in logged[0].getMessage()
    assert "m7" in logged[0].getMessage()


def test_the_host_policy_refuses_a_host_the_operator_did_not_allow(
    examples: dict[str, Path], host_factory: HostFactory, server: LocalServer
) -> None:
    configs = {"http-c": {"enabled": True, "base_url": server.url("/echo")}}
    policy = {"allowed-hosts": ["api.example.com"]}
    with (
        start_host(host_factory, examples, configs, policy) as host,
        pytest.raises(errors.PluginError) as info,
    ):
        host.call("http-c", "executor.execute", {"Model": "m", "Payload": ""})
    assert info.value.code == "host_not_allowed"
    assert info.value.plugin_id == "http-c"
    assert server.hits == []


def test_simple_rust_fetches_its_upstream_through_the_host(
    examples: dict[str, Path], host_factory: HostFactory, server: LocalServer
) -> None:
    configs = {"simple-rust": {"enabled": True, "upstream_url": server.url("/big?size=5")}}
    with start_host(host_factory, examples, configs, {}) as host:
        out = host.call("simple-rust", "executor.execute", {"Model": "m", "Payload": ""})
    assert base64.b64decode(out["Payload"]) == b"xxxxx"
    assert out["Headers"]["X-Upstream-Status"] == ["200"]


def test_an_oversized_upstream_answer_is_an_error_not_a_crash(
    examples: dict[str, Path], host_factory: HostFactory, server: LocalServer
) -> None:
    configs = {"simple-rust": {"enabled": True, "upstream_url": server.url("/big?size=5000")}}
    with (
        start_host(host_factory, examples, configs, {"max-response-bytes": 1000}) as host,
        pytest.raises(errors.PluginError) as info,
    ):
        host.call("simple-rust", "executor.execute", {"Model": "m", "Payload": ""})
    assert info.value.code == "response_too_large"


def test_eight_threads_call_plugins_that_call_back_into_the_host(
    examples: dict[str, Path], host_factory: HostFactory, server: LocalServer
) -> None:
    configs = {
        "http-c": {"enabled": True, "base_url": server.url("/echo")},
        "simple-rust": {"enabled": True, "mode": "lower"},
    }
    errors: list[BaseException] = []
    with start_host(host_factory, examples, configs, {}) as host:

        def worker(n: int) -> None:
            try:
                for i in range(25):
                    body = base64.b64encode(f"N{n}-I{i}".encode()).decode()
                    out = host.call("http-c", "executor.execute", {"Model": "m", "Payload": body})
                    echoed = json.loads(base64.b64decode(out["Payload"]))
                    assert echoed["body"] == body
                    out = host.call("simple-rust", "executor.execute", {"Payload": body})
                    assert base64.b64decode(out["Payload"]) == f"n{n}-i{i}".encode()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]
