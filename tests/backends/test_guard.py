"""Limits the host puts around every plugin: breaker, concurrency, timeout, response size."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host import errors
from cliproxy_host.backends.guard import GuardedBackend, GuardLimits
from cliproxy_host.backends.protocol import Health, State
from cliproxy_host.config.schema import ConfigError, HostConfig
from cliproxy_host.host.facade import PluginHost

from ..conftest import CompilePlugin, HostFactory


@pytest.fixture
def hosts() -> Iterator[list[PluginHost]]:
    made: list[PluginHost] = []
    yield made
    for host in made:
        host.close()


def start(
    factory: HostFactory,
    hosts: list[PluginHost],
    plugin: Path,
    settings: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> PluginHost:
    factory.add("tp", plugin)
    factory.write_config(configs={"tp": {"enabled": True, **settings}})
    if defaults:
        text = factory.config_path.read_text()
        extra = "".join(f"  {k}: {v}\n" for k, v in defaults.items())
        factory.config_path.write_text(text.replace("plugins:\n", "plugins:\n" + extra, 1))
    host = PluginHost.from_config(factory.config_path)
    hosts.append(host)
    assert host.plugins()[0].registered, host.plugins()[0].error
    return host


def code_of(host: PluginHost, method: str, request: Any = None) -> str:
    with pytest.raises(errors.PluginError) as info:
        host.call("tp", method, request or {})
    return info.value.code


def test_consecutive_invalid_responses_open_the_circuit_and_a_probe_closes_it(
    testplugin: Path, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host = start(
        host_factory,
        hosts,
        testplugin,
        {},
        {"breaker-failures": 3, "breaker-cooldown-seconds": 0.3},
    )
    assert [code_of(host, "not_json") for _ in range(3)] == ["invalid_response"] * 3
    # open: fails fast, without reaching the plugin
    assert code_of(host, "echo") == "plugin_unavailable"
    info = host.plugins()[0]
    assert info.state == "unhealthy"
    assert info.last_error is not None
    assert "circuit open" in info.last_error
    time.sleep(0.35)
    assert host.call("tp", "echo", {"a": 1}) == {"a": 1}  # the probe
    assert host.call("tp", "echo", {"a": 2}) == {"a": 2}
    assert host.plugins()[0].state == "running"


def test_errors_the_plugin_answers_on_purpose_do_not_open_the_circuit(
    testplugin: Path, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host = start(host_factory, hosts, testplugin, {}, {"breaker-failures": 2})
    for _ in range(5):
        assert code_of(host, "fail") == "plugin_error"
    assert host.call("tp", "echo", {"ok": 1}) == {"ok": 1}


def test_a_failed_probe_opens_the_circuit_again(
    testplugin: Path, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host = start(
        host_factory,
        hosts,
        testplugin,
        {},
        {"breaker-failures": 1, "breaker-cooldown-seconds": 0.2},
    )
    assert code_of(host, "not_json") == "invalid_response"
    assert code_of(host, "echo") == "plugin_unavailable"
    time.sleep(0.25)
    assert code_of(host, "not_json") == "invalid_response"  # the probe fails
    assert code_of(host, "echo") == "plugin_unavailable"


def test_calls_over_max_concurrent_requests_wait_then_get_busy(
    testplugin: Path, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host = start(
        host_factory, hosts, testplugin, {"max_concurrent_requests": 2}, {"busy-wait-ms": 100}
    )
    results: list[Any] = []
    sleepers = [
        threading.Thread(target=lambda: results.append(host.call("tp", "sleep", {"ms": 800})))
        for _ in range(2)
    ]
    for t in sleepers:
        t.start()
    time.sleep(0.2)
    with pytest.raises(errors.PluginError) as info:
        host.call("tp", "echo", {})
    assert info.value.code == "plugin_busy"
    assert info.value.retryable is True
    assert "max_concurrent_requests" in info.value.message
    for t in sleepers:
        t.join()
    assert results == [{"slept_ms": 800}] * 2
    assert host.call("tp", "echo", {"after": 1}) == {"after": 1}


def test_an_in_process_call_past_its_timeout_returns_at_once_and_marks_the_plugin(
    testplugin: Path, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host = start(host_factory, hosts, testplugin, {"timeout_ms": 100})
    started = time.monotonic()
    with pytest.raises(errors.PluginError) as info:
        host.call("tp", "sleep", {"ms": 1500})
    assert info.value.code == "plugin_timeout"
    assert time.monotonic() - started < 1.4  # it did not wait for the plugin
    assert "within 0.1s" in info.value.message
    assert host.plugins()[0].state == "unhealthy"
    # the stuck call ends on its own; the plugin is healthy again
    deadline = time.monotonic() + 5
    while host.plugins()[0].state != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.plugins()[0].state == "running"
    assert host.call("tp", "echo", {"x": 1}) == {"x": 1}


def test_a_response_over_max_response_bytes_is_an_error(
    testplugin: Path, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host = start(host_factory, hosts, testplugin, {"max_response_bytes": 4096})
    assert host.call("tp", "big", {"bytes": 1000})["data"] == "a" * 1000
    assert code_of(host, "big", {"bytes": 100_000}) == "response_too_large"


def test_changing_a_limit_rebuilds_the_plugin(
    compile_plugin: CompilePlugin, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host = start(host_factory, hosts, compile_plugin(), {"max_response_bytes": 4096})
    assert code_of(host, "big", {"bytes": 10_000}) == "response_too_large"
    host_factory.write_config(configs={"tp": {"enabled": True, "max_response_bytes": 1_000_000}})
    host.apply(HostConfig.load(host_factory.config_path))
    assert len(host.call("tp", "big", {"bytes": 10_000})["data"]) == 10_000


def test_limits_are_validated_in_the_config(testplugin: Path, host_factory: HostFactory) -> None:
    host_factory.add("tp", testplugin)
    host_factory.write_config(configs={"tp": {"enabled": True, "timeout_ms": "soon"}})
    with pytest.raises(ConfigError, match=r"plugins\.configs\.tp\.timeout_ms"):
        PluginHost.from_config(host_factory.config_path)


# -- the guard on its own, around a backend that answers from a list ---------------------


class ScriptedBackend:
    """A backend answering its script in turn; records the thread and timeout of each call."""

    plugin_id = "sb"
    path = Path("sb")

    def __init__(self, answers: list[bytes], *, ends_overruns: bool = False) -> None:
        self.ends_overruns = ends_overruns
        self.answers = answers
        self.calls: list[tuple[str, float | None, threading.Thread]] = []
        self.configs: list[tuple[bytes, float | None]] = []

    def call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        self.calls.append((method, timeout, threading.current_thread()))
        return self.answers.pop(0)

    def configured(self, request: bytes, timeout: float | None) -> None:
        self.configs.append((request, timeout))

    def close(self, timeout: float = 5.0) -> None:
        pass

    def health(self) -> Health:
        return Health()


OK = b'{"ok":true,"result":{"n":1}}'
REFUSED = b'{"ok":false,"error":{"code":"bad_config","message":"no"}}'


def test_the_guard_decodes_and_counts_invalid_envelopes_itself() -> None:
    backend = ScriptedBackend([b"not json", b"{}", OK, b"nope"])
    guard = GuardedBackend(backend, GuardLimits(breaker_failures=3))
    for _ in range(2):
        with pytest.raises(errors.PluginResponseError):
            guard.call("m", b"{}")
    assert guard.call("m", b"{}") == {"n": 1}  # a good answer resets the count
    with pytest.raises(errors.PluginResponseError):
        guard.call("m", b"{}")
    assert guard.health().state is State.RUNNING  # one failure, not three in a row


def test_a_backend_that_ends_overruns_is_handed_the_timeout_on_the_callers_thread() -> None:
    backend = ScriptedBackend([OK], ends_overruns=True)
    assert GuardedBackend(backend, GuardLimits(timeout_s=2.5)).call("m", b"{}") == {"n": 1}
    assert backend.calls == [("m", 2.5, threading.current_thread())]


def test_any_other_backend_is_timed_on_the_guards_pool() -> None:
    backend = ScriptedBackend([OK])
    assert GuardedBackend(backend, GuardLimits(timeout_s=2.5)).call("m", b"{}") == {"n": 1}
    [(method, timeout, thread)] = backend.calls
    assert (method, timeout) == ("m", None)
    assert thread is not threading.current_thread()
    assert thread.daemon


def test_only_a_config_the_plugin_accepted_is_handed_back_to_the_backend() -> None:
    backend = ScriptedBackend([REFUSED, OK, OK], ends_overruns=True)
    guard = GuardedBackend(backend, GuardLimits(timeout_s=3.0))
    with pytest.raises(errors.PluginError):
        guard.call("plugin.reconfigure", b"refused")
    guard.call("plugin.reconfigure", b"accepted")
    guard.call("echo", b"not a config")
    assert backend.configs == [(b"accepted", 3.0)]
