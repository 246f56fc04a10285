"""Bad input on the model endpoints: malformed JSON, a body over the cap, a format no
plugin translates to, a client that reads slowly or vanishes, many concurrent streams.
Each answers a clear error in the protocol's shape and leaks nothing."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import orjson
import pytest

from cliproxy_host.gateway import slots
from cliproxy_host.gateway.app import MAX_BODY_BYTES
from cliproxy_host.gateway.slots import MAX_STREAMS_PER_KEY

from ..host.streamutil import wait_for
from .conftest import KEY, ServerFactory, bearer

# Concurrent streams: a CI-sized load by default, 1,000 in `make stress`.
STREAMS = int(os.environ.get("MODEL_STREAMS", "40"))


@pytest.fixture
def server(gateway: ServerFactory) -> Iterator[Any]:
    with gateway([KEY], ("chat-c",)) as running:
        yield running


def http(server: Any) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=bearer(KEY), timeout=20)


def stats(server: Any) -> Mapping[str, Any]:
    result: Mapping[str, Any] = server.service.host.call("chat-c", "stats", {})
    return result


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tasks() -> int:
    """Threads of this process, Python's and the plugins' own."""
    return len(os.listdir("/proc/self/task"))


def test_malformed_and_missing_model(server: Any) -> None:
    with http(server) as client:
        for body in (b"{oops", b"[1, 2]", b""):
            answer = client.post("/v1/chat/completions", content=body)
            assert answer.status_code == 400, body
            error = answer.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert "JSON" in error["message"]
        answer = client.post("/v1/chat/completions", json={"messages": []})
        assert answer.status_code == 400
        assert '"model"' in answer.json()["error"]["message"]
        # The server keeps serving.
        assert client.get("/v1/models").status_code == 200


def test_body_over_the_cap_is_413_in_the_protocol_shape(server: Any) -> None:
    big = b'{"model": "chat-c-1", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    with http(server) as client:
        answer = client.post("/v1/messages", content=big)
        assert answer.status_code == 413
        assert answer.json()["type"] == "error"
        assert answer.json()["error"]["type"] == "request_too_large"
    with http(server) as client:
        answer = client.post("/v1/chat/completions", content=big)
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "body_too_large"
        assert client.get("/v1/models").status_code == 200


def test_no_translator_names_both_formats(gateway: ServerFactory) -> None:
    # sp's executor speaks openai only, and no plugin translates claude to it.
    with gateway([KEY], ("sp",)) as server, http(server) as client:
        answer = client.post("/v1/messages", json={"model": "any", "messages": []})
        assert answer.status_code == 400
        message = answer.json()["error"]["message"]
        assert "'claude'" in message
        assert "openai" in message
        # The same format passes through untouched: sp answers the bytes "t0-0".
        same = client.post("/v1/chat/completions", json={"model": "any", "messages": []})
        assert same.status_code == 200
        assert same.content == b"t0-0"


def _emits(server: Any) -> int:
    return int(stats(server)["emits_ok"])


def test_slow_reader_holds_the_plugin_back(server: Any) -> None:
    total = 1_000_000
    body = {"model": "chat-c-1", "stream": True, "max_tokens": total, "messages": []}
    with http(server) as client, client.stream("POST", "/v1/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        lines = answer.iter_lines()
        assert next(lines).startswith("data: ")
        # Not reading: the socket buffers fill, then the pump's hand-off, then the
        # plugin's 16 chunks, and its emit waits. Its count stops growing.
        deadline = time.monotonic() + 20
        before = -1
        while (now := _emits(server)) != before:
            assert time.monotonic() < deadline, "the plugin never stopped emitting"
            before = now
            time.sleep(0.5)
        assert before < total
        # Reading again lets it go on.
        for _ in range(before + 100):
            next(lines)
        # The plugin's waiting emit goes on once the pump has room again: a moment later
        # than the reader's last line, on the plugin's own thread.
        wait_for(lambda: _emits(server) > before)
    # Leaving closes the stream: the plugin's next emit fails and its thread ends.
    wait_for(lambda: stats(server)["running"] == 0)
    assert stats(server)["emits_failed"] >= 1


def test_client_vanishing_mid_stream_cancels_the_run(server: Any) -> None:
    base_fds = fds()
    for _ in range(3):
        body = {"model": "chat-c-1", "stream": True, "max_tokens": 1_000_000}
        with http(server) as client, client.stream("POST", "/v1/messages", json=body) as answer:
            assert answer.status_code == 200
            lines = answer.iter_lines()
            for _ in range(10):
                next(lines)
    wait_for(lambda: stats(server)["running"] == 0)
    assert stats(server)["emits_failed"] >= 3
    wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("v1-stream")])
    wait_for(lambda: fds() <= base_fds + 2)
    with http(server) as client:
        assert client.post("/v1/messages", json={"model": "chat-c-1"}).status_code == 200


async def _stream_all(base_url: str, count: int, keys: list[str]) -> list[list[str]]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def one(i: int) -> list[str]:
            body = {"model": "chat-c-1", "stream": True, "max_tokens": 5, "n": i}
            headers = bearer(keys[i % len(keys)])
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=headers
            ) as answer:
                assert answer.status_code == 200
                return [line async for line in answer.aiter_lines() if line]

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_many_concurrent_streams_leak_nothing(gateway: ServerFactory) -> None:
    # One key holds at most MAX_STREAMS_PER_KEY streams: enough keys for all at once.
    keys = [f"{KEY}-{n}" for n in range(-(-STREAMS // MAX_STREAMS_PER_KEY))]
    with gateway(keys, ("chat-c",)) as server:
        _many_concurrent_streams(server, keys)


def _many_concurrent_streams(server: Any, keys: list[str]) -> None:
    with httpx.Client(base_url=server.base_url, headers=bearer(keys[0]), timeout=20) as client:
        # Warm: the first run builds the model catalog.
        assert client.post("/v1/chat/completions", json={"model": "chat-c-1"}).status_code == 200
    base_fds, base_tasks = fds(), tasks()
    results = asyncio.run(_stream_all(server.base_url, STREAMS, keys))
    assert len(results) == STREAMS
    for lines in results:
        assert lines[-1] == "data: [DONE]"
        assert len(lines) == 7  # 5 deltas, the stop chunk, [DONE]
        assert orjson.loads(lines[0][len("data: ") :])["object"] == "chat.completion.chunk"
    wait_for(lambda: stats(server)["running"] == 0, timeout=60)
    wait_for(lambda: fds() <= base_fds + 2, timeout=30)
    # Threads: the server's pool may keep a few idle workers; none per stream stays.
    wait_for(lambda: tasks() <= base_tasks + 8, timeout=30)
    with httpx.Client(base_url=server.base_url, headers=bearer(keys[0]), timeout=20) as client:
        assert client.get("/v1/models").status_code == 200


def test_model_streams_count_against_the_keys_stream_cap(
    gateway: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Model streams and plugin streams share one count per key: a key at its cap gets 429
    too_many_streams (in the protocol's shape) until one of its streams ends."""
    monkeypatch.setattr(slots, "MAX_STREAMS_PER_KEY", 1)
    body = {"model": "chat-c-1", "stream": True, "max_tokens": 1_000_000, "messages": []}
    with gateway([KEY], ("chat-c", "sp")) as server, http(server) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as answer:
            assert answer.status_code == 200
            lines = answer.iter_lines()  # kept: dropped half-way, it closes the connection
            assert next(lines).startswith("data: ")
            refused = client.post("/v1/chat/completions", json=body)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_streams"
            plugin_stream = client.post("/v1/plugins/sp/executor.execute_stream", json={})
            assert plugin_stream.status_code == 429
            # A run without a stream holds no slot.
            plain = {"model": "chat-c-1", "messages": []}
            assert client.post("/v1/chat/completions", json=plain).status_code == 200

        def slot_free() -> bool:
            short = {**body, "max_tokens": 2}
            return client.post("/v1/chat/completions", json=short).status_code == 200

        wait_for(slot_free, timeout=10)
