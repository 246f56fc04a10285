"""Streaming methods over /v1 as Server-Sent Events, from a C and a Rust plugin: the chunks,
the terminal error, and a client that goes away mid-stream (the plugin's next emit fails)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import orjson
import pytest

from cliproxy_host.gateway import slots
from cliproxy_host.gateway.sse import payload_data

from ..host.streamutil import settled, wait_for
from .conftest import KEY, OTHER_KEY, ServerFactory, bearer

STREAM = "executor.execute_stream"


def events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event name, data) for each event of an SSE body; "message" when unnamed."""
    name = "message"
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            yield name, orjson.loads(line[len("data: ") :])
            name = "message"


def read_all(http: httpx.Client, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    with http.stream("POST", path, json=body) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        return list(events(answer.iter_lines()))


@pytest.mark.parametrize(
    ("plugin", "body", "texts"),
    [
        ("sp", {"count": 3}, [b"t0-0", b"t0-1", b"t0-2"]),
        ("stream-rust", {"count": 3}, [b"r0", b"r1", b"r2"]),
    ],
)
def test_a_stream_answers_one_event_per_chunk_then_done(
    gateway: ServerFactory, plugin: str, body: dict[str, Any], texts: list[bytes]
) -> None:
    with (
        gateway([KEY], plugins=(plugin,)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY), timeout=30) as http,
    ):
        for path in (f"/v1/plugins/{plugin}/{STREAM}", f"/v1/dispatch/{STREAM}"):
            got = read_all(http, path, body)
            assert got[0][0] == "headers"
            chunks = [base64.b64decode(data["base64"]) for name, data in got[1:-1]]
            assert chunks == texts
            assert got[-1] == ("done", {})


def test_a_chunk_with_an_error_ends_the_stream_with_an_error_event(
    gateway: ServerFactory,
) -> None:
    with (
        gateway([KEY], plugins=("sp",)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY), timeout=30) as http,
    ):
        got = read_all(http, f"/v1/plugins/sp/{STREAM}", {"count": 2, "emit_error": "boom"})
        name, data = got[-1]
        assert name == "error"
        assert data["error"]["message"] == "boom"
        assert data["error"]["plugin"] == "sp"
        assert [n for n, _ in got].count("done") == 0


@pytest.mark.parametrize(
    ("plugin", "body"),
    [
        ("sp", {"count": 1000, "interval_us": 20_000}),
        ("stream-rust", {"count": 1000, "interval_ms": 20}),
    ],
)
def test_a_client_that_goes_away_mid_stream_closes_it_and_the_next_emit_fails(
    gateway: ServerFactory, plugin: str, body: dict[str, Any]
) -> None:
    with (
        gateway([KEY], plugins=(plugin,)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY), timeout=30) as http,
    ):
        with http.stream("POST", f"/v1/plugins/{plugin}/{STREAM}", json=body) as answer:
            seen = 0
            for name, _ in events(answer.iter_lines()):
                seen += name == "message"
                if seen == 2:
                    break
        # Leaving the block closed the connection with 998 chunks unsent.
        host = server.service.host
        wait_for(lambda: host.call(plugin, "stats", {})["emits_failed"] >= 1, timeout=5)
        stats = settled(host, plugin)
        assert stats["emits_ok"] < 1000
        assert stats["running"] == 0
        # The server keeps serving.
        again = read_all(http, f"/v1/plugins/{plugin}/{STREAM}", {"count": 1})
        assert again[-1] == ("done", {})


def test_payloads_that_are_json_travel_as_json_and_others_as_base64() -> None:
    assert payload_data(b'{"delta": "hi"}') == {"json": {"delta": "hi"}}
    assert payload_data(b"t0-0") == {"base64": base64.b64encode(b"t0-0").decode()}
    assert payload_data(b"\xff{") == {"base64": base64.b64encode(b"\xff{").decode()}


def test_a_key_holds_at_most_max_streams_open_and_gets_them_back_when_they_end(
    gateway: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slots, "MAX_STREAMS_PER_KEY", 2)
    long = {"count": 1000, "interval_us": 20_000}
    path = f"/v1/plugins/sp/{STREAM}"
    with (
        gateway([KEY, OTHER_KEY], plugins=("sp",)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY), timeout=30) as http,
        ExitStack() as open_streams,
    ):
        readers = []  # kept: a line iterator dropped half-way closes its connection
        for _ in range(2):
            answer = open_streams.enter_context(http.stream("POST", path, json=long))
            readers.append(events(answer.iter_lines()))
            assert next(readers[-1])[0] == "headers"
        third = http.post(path, json={"count": 1})
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "too_many_streams"
        # Another key has slots of its own.
        with httpx.Client(base_url=server.base_url, headers=bearer(OTHER_KEY)) as second:
            assert second.post(path, json={"count": 1}).status_code == 200
        open_streams.close()  # both clients go away

        def slot_free() -> bool:
            return http.post(path, json={"count": 1}).status_code == 200

        wait_for(slot_free, timeout=10)
