"""host_callback_id scopes: ids on scoped calls, echoed ids mapped back, cleanups at the end."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from cliproxy_host.callbacks.scopes import ScopeTable
from cliproxy_host.host.facade import with_callback_id

from ..conftest import CompilePlugin, HostFactory
from ..httpserver import LocalServer, serve
from .streamutil import settled, stream_host, stream_plugin

PLUGIN_LOG = "cliproxy_host.plugin.sp"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with serve() as running:
        yield running


def _scoped_record(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    records = [r for r in caplog.records if r.name == PLUGIN_LOG and r.getMessage() == "scoped"]
    assert len(records) == 1, records
    return records[0]


def test_a_scoped_call_gets_an_id_that_maps_back_while_it_runs(
    compile_plugin: CompilePlugin, host_factory: HostFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=PLUGIN_LOG)
    with stream_host(host_factory, stream_plugin(compile_plugin)) as host:
        echoed = host.call("sp", "executor.http_request", {"url": "x"})
        callback_id = echoed["host_callback_id"]
        assert callback_id.isdecimal()
        assert echoed["url"] == "x"
        record = _scoped_record(caplog)
        assert record.host_callback_id == callback_id  # type: ignore[attr-defined]
        assert record.request_plugin == "sp"  # type: ignore[attr-defined]
        assert record.request_method == "executor.http_request"  # type: ignore[attr-defined]
        assert len(host.scopes) == 0  # ended when the call returned
        # Each call has a scope of its own.
        again = host.call("sp", "executor.http_request", {})
        assert again["host_callback_id"] != callback_id
        # A method off the list gets none; a caller's own id is left alone.
        assert "host_callback_id" not in host.call("sp", "echo", {"a": 1})
        own = host.call("sp", "executor.http_request", {"host_callback_id": "7"})
        assert own["host_callback_id"] == "7"


def test_dispatch_scopes_each_plugin_call(
    compile_plugin: CompilePlugin, host_factory: HostFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=PLUGIN_LOG)
    with stream_host(host_factory, stream_plugin(compile_plugin)) as host:
        echoed = host.dispatch("executor.http_request", {"url": "y"})
        assert echoed["url"] == "y"
        record = _scoped_record(caplog)
        assert record.host_callback_id == echoed["host_callback_id"]  # type: ignore[attr-defined]
        assert record.request_method == "executor.http_request"  # type: ignore[attr-defined]
        assert len(host.scopes) == 0


def test_an_unknown_id_is_a_fresh_scope(
    compile_plugin: CompilePlugin, host_factory: HostFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=PLUGIN_LOG)
    with stream_host(host_factory, stream_plugin(compile_plugin)) as host:
        request = {"level": "info", "message": "scoped", "host_callback_id": "424242"}
        out = host.call("sp", "host_call", {"method": "host.log", "request": request})
        assert orjson.loads(out["envelope"]) == {"ok": True, "result": {}}
        record = _scoped_record(caplog)
        assert not hasattr(record, "request_plugin")


def test_a_host_http_stream_ends_with_its_scope(
    compile_plugin: CompilePlugin, host_factory: HostFactory, server: LocalServer
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin)) as host:
        scope = host.scopes.open("sp", "executor.execute")

        def host_call(method: str, request: dict[str, object]) -> dict[str, object]:
            out = host.call("sp", "host_call", {"method": method, "request": request})
            envelope: dict[str, object] = orjson.loads(out["envelope"])
            return envelope

        opened = host_call(
            "host.http.do_stream",
            {"url": server.url("/big?size=100000"), "host_callback_id": scope.callback_id},
        )
        stream_id = opened["result"]["stream_id"]  # type: ignore[index]
        first = host_call("host.http.stream_read", {"stream_id": stream_id})
        assert first["ok"] is True
        host.scopes.end(scope.callback_id)
        after = host_call("host.http.stream_read", {"stream_id": stream_id})
        assert after["error"]["code"] == "unknown_stream"  # type: ignore[index]


def test_an_async_stream_lives_in_its_scope(
    compile_plugin: CompilePlugin, host_factory: HostFactory
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin)) as host:
        stream = host.call_stream("sp", "executor.execute_stream", {"count": 3})
        callback_id = stream.headers["X-Callback-Id"][0]
        assert host.scopes.get(callback_id) is not None  # open while the stream is
        assert len(list(stream)) == 3
        assert host.scopes.get(callback_id) is None


def test_a_callers_scope_ending_aborts_its_stream(
    compile_plugin: CompilePlugin, host_factory: HostFactory
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin)) as host:
        outer = host.scopes.open("pipeline", "request")
        stream = host.call_stream(
            "sp", "executor.execute_stream", {"count": 1000}, callback_id=outer.callback_id
        )
        assert stream.headers["X-Callback-Id"] == [outer.callback_id]
        assert next(stream).payload == b"t0-0"
        host.scopes.end(outer.callback_id)  # e.g. the request timed out
        assert len(list(stream)) <= 16  # what was queued already, then the end
        counts = settled(host)
        assert counts["emits_failed"] == 1
        assert counts["emits_ok"] < 1000
        # An unknown callback_id falls back to a fresh scope.
        fresh = host.call_stream("sp", "executor.execute_stream", {"count": 2}, callback_id="999")
        assert fresh.headers["X-Callback-Id"] != ["999"]
        assert len(list(fresh)) == 2


def test_cleanups_run_once_in_order_and_late_ones_at_once() -> None:
    scopes = ScopeTable()
    ran: list[str] = []
    scope = scopes.open("p", "m")
    assert scopes.add_cleanup(scope.callback_id, lambda: ran.append("a"))
    assert scopes.add_cleanup(scope.callback_id, lambda: ran.append("b"))
    scopes.end(scope.callback_id)
    scopes.end(scope.callback_id)
    assert ran == ["a", "b"]
    assert not scopes.add_cleanup(scope.callback_id, lambda: ran.append("late"))
    assert ran == ["a", "b", "late"]


def test_with_callback_id_splices_into_the_encoded_object() -> None:
    assert orjson.loads(with_callback_id(b"{}", "5")) == {"host_callback_id": "5"}
    assert orjson.loads(with_callback_id(b'{"a":1}', "6")) == {"host_callback_id": "6", "a": 1}
    assert with_callback_id(b"[]", "7") == b"[]"
