"""call_stream and host.stream.emit/close against a real C plugin streaming from its own threads."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import orjson
import pytest

import cliproxy_host
from cliproxy_host import (
    PluginNotFound,
    PluginResponseError,
    PluginStream,
    PluginTimeout,
    StreamChunk,
)

from ..conftest import CompilePlugin, HostFactory
from .streamutil import (
    build_stream_rust,
    settled,
    stats,
    stream_host,
    stream_plugin,
    wait_for,
)


@pytest.fixture(params=["inprocess", "process"])
def isolation(request: pytest.FixtureRequest) -> str:
    """Every stream test runs in-process and with the plugin in a worker process."""
    mode: str = request.param
    return mode


def _texts(stream: PluginStream) -> list[str]:
    return [chunk.payload.decode() for chunk in stream]


def test_the_consumer_interface_is_public() -> None:
    assert cliproxy_host.PluginStream is PluginStream
    assert cliproxy_host.StreamChunk is StreamChunk
    chunk = StreamChunk(b"x")
    assert chunk.error == ""
    with pytest.raises(AttributeError):
        chunk.payload = b"y"  # type: ignore[misc]


def test_sync_answer_is_the_whole_stream(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        stream = host.call_stream("sp", "executor.execute_stream", {"mode": "sync", "count": 3})
        assert stream.headers == {"X-Mode": ["sync"]}
        assert _texts(stream) == ["t0-0", "t0-1", "t0-2"]
        assert list(stream) == []


def test_async_stream_delivers_emitted_chunks_in_order_then_ends(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        first = host.call_stream("sp", "executor.execute_stream", {"count": 5, "delay_ms": 20})
        assert first.headers["X-Mode"] == ["async"]
        stream_id = first.headers["X-Stream-Id"][0]
        assert stream_id.isdecimal()
        assert stream_id == first.stream_id
        assert first.headers["X-Callback-Id"][0].isdecimal()
        assert _texts(first) == [f"t0-{i}" for i in range(5)]
        second = host.call_stream("sp", "executor.execute_stream", {"count": 1})
        # A per-host counter: the next stream has the next ID.
        assert int(second.stream_id) == int(stream_id) + 1
        assert _texts(second) == ["t0-0"]
        counts = settled(host)
        assert counts["closes"] == 2
        assert counts["emits_failed"] == 0


def test_emits_from_the_calling_thread_before_the_answer(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        stream = host.call_stream("sp", "executor.execute_stream", {"mode": "inline", "count": 4})
        assert _texts(stream) == [f"t0-{i}" for i in range(4)]


def test_emit_blocks_while_sixteen_chunks_wait(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        stream = host.call_stream("sp", "executor.execute_stream", {"count": 40})
        assert next(stream).payload == b"t0-0"
        # One taken, sixteen waiting: the 18th emit blocks until the consumer reads.
        wait_for(lambda: stats(host)["emits_ok"] == 17)
        time.sleep(0.2)
        assert stats(host)["emits_ok"] == 17
        assert next(stream).payload == b"t0-1"
        wait_for(lambda: stats(host)["emits_ok"] == 18)
        assert _texts(stream) == [f"t0-{i}" for i in range(2, 40)]
        assert settled(host)["emits_failed"] == 0


def test_emitting_past_the_buffer_before_answering_fails_at_the_timeout(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(
        host_factory, stream_plugin(compile_plugin), isolation=isolation, timeout_ms=2000
    ) as host:
        started = time.monotonic()
        request = {"mode": "inline", "count": 20}
        stream = host.call_stream("sp", "executor.execute_stream", request)
        assert 0.9 < time.monotonic() - started < 2  # the 17th emit waited, then failed
        assert _texts(stream) == [f"t0-{i}" for i in range(16)]
        assert "took no chunk within 1 s" in settled(host)["last_failure"]


def test_error_chunk_is_terminal(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        request = {"count": 3, "emit_error": "upstream went away"}
        chunks = list(host.call_stream("sp", "executor.execute_stream", request))
        assert chunks == [
            StreamChunk(b"t0-0"),
            StreamChunk(b"t0-1"),
            StreamChunk(b"t0-2", "upstream went away"),
        ]


def test_close_with_an_error_is_delivered_after_the_queued_chunks(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        request = {"count": 2, "close_error": "quota exceeded"}
        chunks = list(host.call_stream("sp", "executor.execute_stream", request))
        assert chunks == [
            StreamChunk(b"t0-0"),
            StreamChunk(b"t0-1"),
            StreamChunk(b"", "quota exceeded"),
        ]


def test_consumer_closing_early_aborts_the_stream(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        with host.call_stream("sp", "executor.execute_stream", {"count": 1000}) as stream:
            assert next(stream).payload == b"t0-0"
            wait_for(lambda: stats(host)["emits_ok"] >= 17)  # the plugin is blocked in emit
        stream.close()  # idempotent
        assert list(stream) == []
        counts = settled(host)  # the blocked emit returned, and the thread stopped
        assert counts["emits_failed"] == 1
        assert counts["emits_ok"] < 1000
        failure = orjson.loads(counts["last_failure"])
        assert failure["error"]["code"] == "host_call_failed"
        assert failure["error"]["message"].startswith(f"stream {stream.stream_id} is not open")


def test_emit_after_close_and_close_twice(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        request = {"count": 2, "close_twice": 1, "after_close": 1}
        stream = host.call_stream("sp", "executor.execute_stream", request)
        assert _texts(stream) == ["t0-0", "t0-1"]
        counts = settled(host)
        assert counts["closes"] == 2  # both closes answered {}
        assert counts["emits_failed"] == 1
        failure = orjson.loads(counts["last_failure"])
        assert failure["error"]["code"] == "host_call_failed"
        assert f"stream {stream.stream_id} is not open" in failure["error"]["message"]


def test_emit_to_an_unknown_stream_is_refused(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        for method, request, answer in [
            ("host.stream.emit", {"stream_id": "999999", "payload": ""}, "not open"),
            ("host.stream.emit", {"payload": "eA=="}, "stream_id"),
            ("host.stream.close", {"stream_id": "999999"}, None),
            ("host.stream.close", {}, None),
        ]:
            out = host.call("sp", "host_call", {"method": method, "request": request})
            envelope = orjson.loads(out["envelope"])
            if answer is None:
                assert envelope == {"ok": True, "result": {}}
            else:
                assert envelope["ok"] is False
                assert answer in envelope["error"]["message"]


def test_a_stream_never_closed_ends_at_the_timeout(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(
        host_factory, stream_plugin(compile_plugin), isolation=isolation, timeout_ms=300
    ) as host:
        stream = host.call_stream("sp", "executor.execute_stream", {"count": 2, "close": 0})
        assert _texts_until_error(stream) == ["t0-0", "t0-1"]
        # The scope's end closed it: nothing is left open, and a later emit fails.
        assert len(host.scopes) == 0
        out = host.call(
            "sp",
            "host_call",
            {"method": "host.stream.emit", "request": {"stream_id": stream.stream_id}},
        )
        assert "is not open" in orjson.loads(out["envelope"])["error"]["message"]


def _texts_until_error(stream: PluginStream) -> list[str]:
    texts: list[str] = []
    started = time.monotonic()

    def read() -> None:
        for chunk in stream:
            texts.append(chunk.payload.decode())

    with pytest.raises(PluginTimeout, match=r"within 0\.3 s"):
        read()
    assert 0.25 < time.monotonic() - started < 5
    return texts


def test_emitting_over_the_response_cap_ends_that_stream_only(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), max_response_bytes=4096) as host:
        other = host.call_stream("sp", "executor.execute_stream", {"count": 3, "delay_ms": 100})
        big = host.call_stream("sp", "executor.execute_stream", {"count": 10, "size": 1024})
        chunks = list(big)
        assert [len(c.payload) for c in chunks[:4]] == [1024] * 4
        assert len(chunks) == 5
        assert "max_response_bytes" in chunks[4].error
        assert _texts(other) == ["t0-0", "t0-1", "t0-2"]
        counts = settled(host)
        failure = orjson.loads(counts["last_failure"])
        assert failure["error"]["code"] == "response_too_large"


def test_async_consumer(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:

        async def consume() -> list[bytes]:
            stream = host.call_stream(
                "sp", "executor.execute_stream", {"count": 30, "interval_us": 2000}
            )
            threads = threading.active_count()
            out = [chunk.payload async for chunk in stream]
            # Woken by the loop, not by a thread per chunk (an isolated plugin's host
            # calls may start a pool thread or two).
            assert threading.active_count() <= threads + 3
            return out

        assert asyncio.run(consume()) == [f"t0-{i}".encode() for i in range(30)]


def test_async_consumer_times_out(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(
        host_factory, stream_plugin(compile_plugin), isolation=isolation, timeout_ms=200
    ) as host:

        async def consume() -> list[bytes]:
            stream = host.call_stream("sp", "executor.execute_stream", {"count": 1, "close": 0})
            out: list[bytes] = []

            async def read() -> None:
                async for chunk in stream:
                    out.append(chunk.payload)

            with pytest.raises(PluginTimeout):
                await read()
            return out

        assert asyncio.run(consume()) == [b"t0-0"]


def test_call_stream_errors_are_typed(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        with pytest.raises(PluginNotFound):
            host.call_stream("nope", "executor.execute_stream", {})
        with pytest.raises(PluginResponseError, match="chunks"):
            host.call_stream("sp", "echo", {"chunks": 5})
        # A failed call leaves nothing open.
        assert len(host.scopes) == 0


@pytest.fixture(scope="session")
def stream_rust() -> Path:
    return build_stream_rust()


def test_rust_plugin_streams_from_its_own_thread(
    stream_rust: Path, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_rust, "stream-rust", isolation=isolation) as host:
        stream = host.call_stream("stream-rust", "executor.execute_stream", {"count": 20})
        assert stream.headers == {"X-Plugin": ["stream-rust"]}
        assert _texts(stream) == [f"r{i}" for i in range(20)]
        counts = settled(host, "stream-rust")
        assert counts["emits_ok"] == 20
        assert counts["emits_failed"] == 0


def test_rust_plugin_sees_emits_fail_after_the_consumer_stops(
    stream_rust: Path, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_rust, "stream-rust", isolation=isolation) as host:
        request = {"count": 10000, "interval_ms": 1}
        with host.call_stream("stream-rust", "executor.execute_stream", request) as stream:
            assert [next(stream).payload for _ in range(3)] == [b"r0", b"r1", b"r2"]
        counts = settled(host, "stream-rust")
        assert counts["emits_failed"] == 1
        assert counts["emits_ok"] < 10000
        assert f"stream {stream.stream_id} is not open" in counts["last_failure"]


def test_unloading_the_plugin_aborts_its_streams(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin), isolation=isolation) as host:
        stream = host.call_stream("sp", "executor.execute_stream", {"count": 1000})
        assert next(stream).payload == b"t0-0"
        wait_for(lambda: stats(host)["emits_ok"] >= 17)  # its thread is blocked in emit
        started = time.monotonic()
        assert host.unload("sp")
        # The blocked emit was failed first, so the plugin's shutdown did not wait for it.
        assert time.monotonic() - started < 3
        chunks = list(stream)
        assert chunks[-1].error == "plugin sp was unloaded while streaming"
        assert all(c.error == "" for c in chunks[:-1])
