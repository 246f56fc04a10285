"""check's fake host: the real host's rules for host.http requests, answers through the gate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from cliproxy_host.callbacks import HostCallbacks
from cliproxy_host.callbacks.http import request_problems
from cliproxy_host.check import fakehost
from cliproxy_host.check.fakehost import FakeHost
from cliproxy_host.config import HttpPolicy
from cliproxy_host.gate import gated

# Each refused before anything is sent, so the real host needs no server to judge them.
MALFORMED: list[dict[str, Any]] = [
    {},
    {"url": "ftp://example.com/"},
    {"url": "http://[::1/"},
    {"url": "https://example.com/", "method": "GE T"},
    {"url": "https://example.com/", "headers": ["X-A", "b"]},
    {"url": "https://example.com/", "headers": {"Bad Name": ["v"]}},
    {"url": "https://example.com/", "headers": {"X-A": ["ok", 2]}},
    {"url": "https://example.com/", "body": "%%"},
    {"url": "https://example.com/", "body": 12},
    {"request": "GET /"},
    {"request": {"url": "/relative"}},
]


@pytest.fixture
def real() -> Iterator[HostCallbacks]:
    callbacks = HostCallbacks(HttpPolicy())
    yield callbacks
    callbacks.close()


def answer(handler: Any, method: str, request: object) -> Any:
    data = request if isinstance(request, bytes) else orjson.dumps(request)
    return orjson.loads(handler("p", method, data))


@pytest.mark.parametrize("request_body", MALFORMED)
@pytest.mark.parametrize("method", ["host.http.do", "host.http.do_stream"])
def test_the_fake_host_refuses_what_the_real_host_refuses(
    real: HostCallbacks, method: str, request_body: dict[str, Any]
) -> None:
    host = FakeHost()
    fake_error = answer(host.handler, method, request_body)["error"]
    real_error = answer(gated(real), method, request_body)["error"]
    assert fake_error["code"] == real_error["code"] == "invalid_request"
    # The real host answers the first problem; the fake one lists them all in its report.
    assert fake_error["message"].startswith(real_error["message"])
    assert host.errors == [f"{method}: {p}" for p in request_problems(request_body)]


def test_request_problems_lists_every_problem_in_field_order() -> None:
    problems = request_problems(
        {"method": 7, "url": "ftp://x/", "headers": {"X-A": 1, "Host": 2}, "body": "%%"}
    )
    assert problems == [
        "field 'method' must be an HTTP method, got 7",
        "url 'ftp://x/' is not an absolute http or https URL",
        "header 'X-A' must be a string or a list of strings",
        "body is not a base64 string",
    ]
    assert request_problems({"URL": "https://example.com/", "Body": "e30="}) == []


def test_a_well_formed_request_gets_the_local_answer() -> None:
    host = FakeHost()
    body = {"request": {"method": "post", "url": "https://example.com/", "body": "e30="}}
    assert answer(host.handler, "host.http.do", body)["result"]["StatusCode"] == 200
    assert host.errors == host.warnings == []
    assert host.calls == {"host.http.do": 1}


def test_a_stream_is_one_chunk_then_done_then_gone() -> None:
    host = FakeHost()
    opened = answer(host.handler, "host.http.do_stream", {"url": "https://example.com/"})
    read = {"stream_id": opened["result"]["stream_id"]}
    assert answer(host.handler, "host.http.stream_read", read)["result"]["done"] is False
    assert answer(host.handler, "host.http.stream_read", read)["result"]["done"] is True
    assert answer(host.handler, "host.http.stream_read", read)["error"]["code"] == "invalid_request"
    assert host.errors == [
        f"host.http.stream_read: stream {read['stream_id']} read after it was done"
    ]
    assert answer(host.handler, "host.http.stream_close", {"stream_id": "nope"})["ok"] is False


@pytest.mark.parametrize(
    ("method", "request_bytes", "code"),
    [
        ("host.log", b"\xff", "invalid_request"),
        ("host.log", b"[]", "invalid_request"),
        ("host.teleport", b"{}", "host_call_failed"),
    ],
)
def test_refusals_are_error_envelopes(method: str, request_bytes: bytes, code: str) -> None:
    host = FakeHost()
    assert answer(host.handler, method, request_bytes)["error"]["code"] == code
    assert host.errors or host.warnings


def test_a_fault_in_the_fake_host_answers_an_envelope_not_an_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(request: Any) -> list[str]:
        raise RuntimeError("bug in the checker")

    monkeypatch.setattr(fakehost, "request_problems", broken)
    error = answer(FakeHost().handler, "host.http.do", {"url": "https://example.com/"})["error"]
    assert error["code"] == "host_call_failed"
    assert "bug in the checker" in error["message"]


def test_the_fake_host_answers_host_stream_emit_with_back_pressure_then_not_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cliproxy_host.check import limits  # noqa: PLC0415

    monkeypatch.setattr(limits, "CALL_TIMEOUT", 0.4)  # a full stream's emit waits 0.2 s
    host = FakeHost()
    stream = host.streams.open("p")
    emit = {"stream_id": stream.stream_id, "payload": "eA=="}
    for _ in range(16):
        assert answer(host.handler, "host.stream.emit", emit) == {"ok": True, "result": {}}
    started = time.monotonic()
    full = answer(host.handler, "host.stream.emit", emit)["error"]
    assert full["code"] == "host_call_failed"
    assert "16 waited" in full["message"]
    assert 0.15 < time.monotonic() - started < 2
    assert answer(host.handler, "host.stream.close", {"stream_id": stream.stream_id})["ok"]
    closed = answer(host.handler, "host.stream.emit", emit)["error"]
    assert f"stream {stream.stream_id} is not open" in closed["message"]
    assert [f.problem for f in host.streams.findings] == [
        f"host.stream.emit on stream {stream.stream_id} after the plugin's host.stream.close"
    ]
    host.streams.shutdown()
