"""host.http.* through HostCallbacks, against a real server on 127.0.0.1."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from cliproxy_host.callbacks import HostCallbacks
from cliproxy_host.callbacks.http import (
    MAX_OPEN_STREAMS,
    MAX_REQUEST_BODY_BYTES,
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_HEADERS,
    MAX_URL_LENGTH,
    read_request,
)
from cliproxy_host.config.schema import HttpPolicy
from cliproxy_host.gate import gated

from ..httpserver import LocalServer, serve

Make = Callable[..., HostCallbacks]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with serve() as running:
        yield running


@pytest.fixture
def make() -> Iterator[Make]:
    """Build HostCallbacks from HttpPolicy keyword arguments; all are closed afterwards."""
    made: list[HostCallbacks] = []

    def build(**policy: Any) -> HostCallbacks:
        made.append(HostCallbacks(HttpPolicy(**policy)))
        return made[-1]

    yield build
    for callbacks in made:
        callbacks.close()


@pytest.fixture
def callbacks(make: Make) -> HostCallbacks:
    return make()


def call(callbacks: HostCallbacks, method: str, request: object, plugin_id: str = "p1") -> Any:
    return orjson.loads(gated(callbacks)(plugin_id, method, orjson.dumps(request)))


def result(answer: Any) -> Any:
    assert answer["ok"] is True, answer
    return answer["result"]


def failure(answer: Any, code: str) -> dict[str, Any]:
    assert answer["ok"] is False, answer
    assert answer["error"]["code"] == code, answer
    err: dict[str, Any] = answer["error"]
    return err


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def echoed(answer: Any) -> Any:
    return orjson.loads(unb64(result(answer)["Body"]))


def read_all(callbacks: HostCallbacks, stream_id: str, plugin_id: str = "p1") -> list[Any]:
    reads = []
    for _ in range(10_000):
        reads.append(
            result(call(callbacks, "host.http.stream_read", {"stream_id": stream_id}, plugin_id))
        )
        if reads[-1]["done"]:
            return reads
    raise AssertionError("stream never finished")


# host.http.do


def test_do_answers_status_headers_and_body(callbacks: HostCallbacks, server: LocalServer) -> None:
    answer = result(call(callbacks, "host.http.do", {"url": server.url("/big?size=5")}))
    assert set(answer) == {"StatusCode", "Headers", "Body"}
    assert answer["StatusCode"] == 200
    assert answer["Headers"]["Content-Length"] == ["5"]
    assert unb64(answer["Body"]) == b"xxxxx"


def test_do_defaults_to_get_and_sends_no_body(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    echo = echoed(call(callbacks, "host.http.do", {"url": server.url("/echo")}))
    assert echo["method"] == "GET"
    assert echo["body"] == ""
    assert "content-length" not in {name.lower() for name, _ in echo["headers"]}


def test_do_round_trips_a_binary_body_and_headers(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    payload = bytes(range(256)) * 4
    request = {
        "method": "post",
        "url": server.url("/echo?q=1"),
        "headers": {"X-Many": ["v1", "v2"], "X-One": "single", "Content-Type": ["a/b"]},
        "body": b64(payload),
    }
    echo = echoed(call(callbacks, "host.http.do", request))
    assert echo["method"] == "POST"
    assert echo["target"] == "/echo?q=1"
    assert unb64(echo["body"]) == payload
    headers = echo["headers"]
    assert [v for n, v in headers if n == "X-Many"] == ["v1", "v2"]
    assert ["X-One", "single"] in headers
    assert ["Content-Type", "a/b"] in headers
    assert ["Content-Length", str(len(payload))] in headers


def test_do_accepts_the_request_nested_under_request_which_wins(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    request = {
        "url": server.url("/status?code=500"),
        "callback_id": "abc",
        "request": {"method": "PUT", "url": server.url("/echo"), "body": b64(b"nested")},
    }
    echo = echoed(call(callbacks, "host.http.do", request))
    assert echo["method"] == "PUT"
    assert unb64(echo["body"]) == b"nested"


def test_do_reads_keys_case_insensitively(callbacks: HostCallbacks, server: LocalServer) -> None:
    request = {
        "Request": {
            "Method": "PATCH",
            "URL": server.url("/echo"),
            "Headers": {"X-Case": ["yes"]},
            "BODY": b64(b"shout"),
        }
    }
    echo = echoed(call(callbacks, "host.http.do", request))
    assert echo["method"] == "PATCH"
    assert ["X-Case", "yes"] in echo["headers"]
    assert unb64(echo["body"]) == b"shout"


def test_do_preserves_multi_value_response_headers_with_canonical_names(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    answer = result(call(callbacks, "host.http.do", {"url": server.url("/multi")}))
    assert answer["Headers"]["X-Multi"] == ["a", "b"]
    assert answer["Headers"]["Set-Cookie"] == ["one=1", "two=2"]
    assert unb64(answer["Body"]) == b"multi"


def test_do_does_not_follow_redirects(callbacks: HostCallbacks, server: LocalServer) -> None:
    answer = result(call(callbacks, "host.http.do", {"url": server.url("/redirect")}))
    assert answer["StatusCode"] == 302
    assert answer["Headers"]["Location"] == ["/echo"]
    assert unb64(answer["Body"]) == b""


def test_do_returns_error_statuses_as_results(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    answer = result(call(callbacks, "host.http.do", {"url": server.url("/status?code=503")}))
    assert answer["StatusCode"] == 503


def test_do_drops_the_de_chunked_transfer_encoding_header(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    url = server.url("/big?size=10000&chunked=1")
    answer = result(call(callbacks, "host.http.do", {"url": url}))
    assert "Transfer-Encoding" not in answer["Headers"]
    assert unb64(answer["Body"]) == b"x" * 10000


def test_do_ignores_a_plugin_supplied_host_and_content_length(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    request = {
        "method": "POST",
        "url": server.url("/echo"),
        "headers": {"Host": ["evil.example"], "Content-Length": ["999"]},
        "body": b64(b"abc"),
    }
    headers = dict(echoed(call(callbacks, "host.http.do", request))["headers"])
    assert headers["Host"] == f"127.0.0.1:{server.port}"
    assert headers["Content-Length"] == "3"


def test_do_asks_for_uncompressed_bodies_unless_the_plugin_chooses(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    plain = dict(echoed(call(callbacks, "host.http.do", {"url": server.url("/echo")}))["headers"])
    assert plain["Accept-Encoding"] == "identity"
    request = {"url": server.url("/echo"), "headers": {"Accept-Encoding": ["gzip"]}}
    chosen = echoed(call(callbacks, "host.http.do", request))["headers"]
    assert [v for n, v in chosen if n.lower() == "accept-encoding"] == ["gzip"]


def test_do_never_shares_cookies_between_requests(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    result(call(callbacks, "host.http.do", {"url": server.url("/set-cookie")}))
    headers = echoed(call(callbacks, "host.http.do", {"url": server.url("/echo")}, "p2"))
    assert "cookie" not in {name.lower() for name, _ in headers["headers"]}


def test_do_sends_non_ascii_header_values_as_utf8(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    request = {"url": server.url("/echo"), "headers": {"X-Name": ["Zoë"]}}
    headers = dict(echoed(call(callbacks, "host.http.do", request))["headers"])
    # http.server decodes header bytes as latin-1.
    assert headers["X-Name"].encode("latin-1").decode("utf-8") == "Zoë"


def test_do_is_safe_from_many_threads(callbacks: HostCallbacks, server: LocalServer) -> None:
    failures: list[Any] = []

    def worker(index: int) -> None:
        for round_ in range(5):
            body = f"{index}-{round_}".encode()
            request = {"method": "POST", "url": server.url("/echo"), "body": b64(body)}
            answer = call(callbacks, "host.http.do", request, f"plugin-{index}")
            if not answer["ok"] or unb64(echoed(answer)["body"]) != body:
                failures.append(answer)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# policy


@pytest.mark.parametrize(
    ("patterns", "url_host"),
    [
        (["127.0.0.*"], "127.0.0.1"),
        (["127.0.0.1"], "127.0.0.1"),
        (["*.example.com"], "api.example.com"),
        (["*.EXAMPLE.com"], "API.Example.COM"),
        (["other.test", "api.example.*"], "api.example.com"),
    ],
)
def test_allowed_hosts_admit_matching_hosts(
    make: Make, server: LocalServer, patterns: list[str], url_host: str
) -> None:
    # The server doubles as the proxy, so no name is ever resolved and nothing leaves 127.0.0.1.
    callbacks = make(allowed_hosts=patterns, proxy_url=server.base_url)
    echo = echoed(call(callbacks, "host.http.do", {"url": f"http://{url_host}/echo"}))
    assert echo["target"].lower() == f"http://{url_host}/echo".lower()


@pytest.mark.parametrize(
    ("patterns", "url"),
    [
        (["127.0.0.*"], "http://localhost/echo"),
        (["127.0.0.*"], "http://10.0.0.1/echo"),
        (["127.0.0.*"], "http://127.0.0.evil.test/echo"),
        (["*.example.com"], "http://example.com/echo"),
        (["*.example.com"], "http://api.example.com.evil.test/echo"),
        (["*.example.com"], "http://evil.test/echo?next=api.example.com"),
        (["*.example.com"], "http://api.example.com@evil.test/echo"),
        (["api.example.com"], "https://api.example.org/echo"),
    ],
)
def test_refused_hosts_are_refused_before_any_connection(
    make: Make, server: LocalServer, patterns: list[str], url: str, caplog: pytest.LogCaptureFixture
) -> None:
    callbacks = make(allowed_hosts=patterns, proxy_url=server.base_url)
    hits_before = len(server.hits)
    host = httpx.URL(url).host
    for method in ("host.http.do", "host.http.do_stream"):
        err = failure(call(callbacks, method, {"url": url}, "nosy"), "host_not_allowed")
        assert err["http_status"] == 403
        assert host in err["message"]
        assert "http.allowed-hosts" in err["message"]
    assert len(server.hits) == hits_before
    assert any("nosy" in r.getMessage() and host in r.getMessage() for r in caplog.records)


def test_redirect_cannot_escape_the_allow_list(make: Make, server: LocalServer) -> None:
    callbacks = make(allowed_hosts=["127.0.0.1"])
    answer = result(call(callbacks, "host.http.do", {"url": server.url("/redirect")}))
    assert answer["StatusCode"] == 302


def test_slow_answer_is_host_timeout(make: Make, server: LocalServer) -> None:
    callbacks = make(timeout_seconds=0.3)
    url = server.url("/slow?seconds=3")
    err = failure(call(callbacks, "host.http.do", {"url": url}), "host_timeout")
    assert err["http_status"] == 504
    assert err["retryable"] is True
    assert "0.3s" in err["message"]
    failure(call(callbacks, "host.http.do_stream", {"url": url}), "host_timeout")


def test_timeout_bounds_the_whole_exchange_not_each_read(make: Make, server: LocalServer) -> None:
    callbacks = make(timeout_seconds=0.5)
    url = server.url("/drip?count=30&interval=0.1")
    failure(call(callbacks, "host.http.do", {"url": url}), "host_timeout")


def test_oversized_response_is_refused(make: Make, server: LocalServer) -> None:
    callbacks = make(max_response_bytes=1000)
    assert result(call(callbacks, "host.http.do", {"url": server.url("/big?size=1000")}))
    for url in (server.url("/big?size=1001"), server.url("/big?size=50000&chunked=1")):
        err = failure(call(callbacks, "host.http.do", {"url": url}), "response_too_large")
        assert err["http_status"] == 502
        assert "1000" in err["message"]
        assert "http.max-response-bytes" in err["message"]


def test_connection_refused_is_upstream_error(callbacks: HostCallbacks) -> None:
    with serve() as gone:
        url = gone.url("/echo")
    err = failure(call(callbacks, "host.http.do", {"url": url}), "upstream_error")
    assert err["http_status"] == 502
    assert "127.0.0.1" in err["message"]


# malformed requests


@pytest.mark.parametrize(
    ("request_body", "mentions"),
    [
        ({}, "url"),
        ({"url": ""}, "url"),
        ({"url": 12}, "url"),
        ({"url": "not a url"}, "absolute"),
        ({"url": "/relative/path"}, "absolute"),
        ({"url": "ftp://127.0.0.1/file"}, "absolute"),
        ({"url": "file:///etc/passwd"}, "absolute"),
        ({"url": "http://"}, "absolute"),
        ({"url": "http://[::1/"}, "invalid"),
        ({"url": "URL", "body": "***not base64***"}, "body"),
        ({"url": "URL", "body": 12}, "body"),
        ({"url": "URL", "method": "GE T"}, "method"),
        ({"url": "URL", "method": 7}, "method"),
        ({"url": "URL", "headers": ["X-A", "b"]}, "headers"),
        ({"url": "URL", "headers": {"X-A": 1}}, "X-A"),
        ({"url": "URL", "headers": {"X-A": ["ok", 2]}}, "X-A"),
        ({"url": "URL", "headers": {"Bad Name": ["v"]}}, "Bad Name"),
        ({"url": "URL", "headers": {"Zoë": ["v"]}}, "Zoë"),
        ({"url": "URL", "headers": {"X-A": ["a\r\nInjected: yes"]}}, "cannot be sent"),
        ({"request": "GET /"}, "request"),
    ],
)
def test_malformed_http_requests_answer_invalid_request(
    callbacks: HostCallbacks, server: LocalServer, request_body: dict[str, Any], mentions: str
) -> None:
    if request_body.get("url") == "URL":
        request_body = {**request_body, "url": server.url("/echo")}
    for method in ("host.http.do", "host.http.do_stream"):
        err = failure(call(callbacks, method, request_body), "invalid_request")
        assert err["http_status"] == 400
        assert mentions in err["message"]


def _url_of_length(server: LocalServer, length: int) -> str:
    base = server.url("/echo?q=")
    return base + "x" * (length - len(base))


def _oversized(server: LocalServer, what: str) -> dict[str, Any]:
    """A request one step over the cap of `what`."""
    url = server.url("/echo")
    if what == "header values":
        return {"url": url, "headers": {"X-Many": ["v"] * (MAX_REQUEST_HEADERS + 1)}}
    if what == "header bytes":
        return {"url": url, "headers": {"X-Big": "x" * MAX_REQUEST_HEADER_BYTES}}
    if what == "url":
        return {"url": _url_of_length(server, MAX_URL_LENGTH + 1)}
    return {"url": url, "method": "POST", "body": b64(b"x" * (MAX_REQUEST_BODY_BYTES + 1))}


@pytest.mark.parametrize(
    ("what", "mentions"),
    [
        ("header values", f"at most {MAX_REQUEST_HEADERS}"),
        ("header bytes", f"at most {MAX_REQUEST_HEADER_BYTES} bytes"),
        ("url", f"at most {MAX_URL_LENGTH}"),
        ("body", f"at most {MAX_REQUEST_BODY_BYTES} bytes"),
    ],
)
def test_requests_over_a_cap_are_invalid_and_never_sent(
    callbacks: HostCallbacks, server: LocalServer, what: str, mentions: str
) -> None:
    request = _oversized(server, what)
    before = len(server.hits)
    for method in ("host.http.do", "host.http.do_stream"):
        err = failure(call(callbacks, method, request), "invalid_request")
        assert mentions in err["message"]
    assert len(server.hits) == before


def test_requests_at_every_cap_are_taken(server: LocalServer) -> None:
    at_caps = {
        "url": _url_of_length(server, MAX_URL_LENGTH),
        "method": "POST",
        "headers": {"X-Many": ["v"] * (MAX_REQUEST_HEADERS - 1), "X-Big": "x" * 1000},
        "body": b64(b"x" * MAX_REQUEST_BODY_BYTES),
    }
    outgoing, problems = read_request(at_caps)
    assert problems == []
    assert outgoing is not None
    assert len(outgoing.headers) == MAX_REQUEST_HEADERS
    assert len(outgoing.body) == MAX_REQUEST_BODY_BYTES
    big = {"url": server.url("/echo"), "headers": {"X-Big": "x" * (MAX_REQUEST_HEADER_BYTES - 5)}}
    assert read_request(big)[1] == []


def test_a_long_url_is_sent(callbacks: HostCallbacks, server: LocalServer) -> None:
    # Well under the cap, but past the sizes where a client or server might cut a line.
    url = _url_of_length(server, 8000)
    assert result(call(callbacks, "host.http.do", {"url": url}))["StatusCode"] == 200


@pytest.mark.parametrize(
    "method",
    ["host.http.do", "host.http.do_stream", "host.http.stream_read", "host.http.stream_close"],
)
@pytest.mark.parametrize("request_bytes", [b"{", b"null", b"[]", b"3", b"\x00\x01", b""])
def test_non_object_requests_answer_invalid_request(
    callbacks: HostCallbacks, method: str, request_bytes: bytes
) -> None:
    answer = orjson.loads(gated(callbacks)("p1", method, request_bytes))
    failure(answer, "invalid_request")


@pytest.mark.parametrize("method", ["host.http.stream_read", "host.http.stream_close"])
@pytest.mark.parametrize("request_body", [{}, {"stream_id": ""}, {"stream_id": 5}])
def test_stream_calls_need_a_stream_id(
    callbacks: HostCallbacks, method: str, request_body: dict[str, Any]
) -> None:
    assert (
        "stream_id" in failure(call(callbacks, method, request_body), "invalid_request")["message"]
    )


@pytest.mark.parametrize("method", ["host.http.get", "host.unknown", "", "host.log "])
def test_unknown_method_answers_host_call_failed(callbacks: HostCallbacks, method: str) -> None:
    err = failure(call(callbacks, method, {}), "host_call_failed")
    assert err["message"] == f"unsupported host callback {method}"


def test_unexpected_exception_answers_host_call_failed_and_is_logged(
    callbacks: HostCallbacks,
    server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(*args: object, **kwargs: object) -> httpx.Response:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(httpx.Client, "send", explode)
    caplog.set_level(logging.ERROR)
    for method in ("host.http.do", "host.http.do_stream"):
        err = failure(
            call(callbacks, method, {"url": server.url("/echo")}, "crashy"), "host_call_failed"
        )
        assert "kaboom" in err["message"]
        assert method in err["message"]
    logged = [r for r in caplog.records if r.name == "cliproxy_host.callbacks"]
    assert len(logged) == 2
    assert all("crashy" in r.getMessage() and r.exc_info for r in logged)


# streams


def test_stream_reads_to_done_then_is_gone(callbacks: HostCallbacks, server: LocalServer) -> None:
    url = server.url("/stream?count=4&interval=0.02")
    opened = result(call(callbacks, "host.http.do_stream", {"url": url}))
    assert set(opened) == {"status_code", "headers", "stream_id"}
    assert opened["status_code"] == 200
    assert opened["headers"]["Content-Type"] == ["text/event-stream"]
    assert "Transfer-Encoding" not in opened["headers"]
    reads = read_all(callbacks, opened["stream_id"])
    assert all(read["error"] == "" for read in reads)
    assert all(not read["done"] for read in reads[:-1])
    assert reads[-1] == {"payload": "", "error": "", "done": True}
    body = b"".join(unb64(read["payload"]) for read in reads)
    assert body == b"chunk-0\nchunk-1\nchunk-2\nchunk-3\n"
    assert len(reads) > 2  # the chunks arrived as separate reads, not one buffered body
    after = call(callbacks, "host.http.stream_read", {"stream_id": opened["stream_id"]})
    assert failure(after, "unknown_stream")["http_status"] == 404
    # Plugins close the body after reading it to the end: that must still be fine.
    assert (
        result(call(callbacks, "host.http.stream_close", {"stream_id": opened["stream_id"]})) == {}
    )


def test_a_plugin_has_at_most_max_open_streams(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    url = server.url("/stream?count=2&interval=0.01")
    opened = [
        result(call(callbacks, "host.http.do_stream", {"url": url}))["stream_id"]
        for _ in range(MAX_OPEN_STREAMS)
    ]
    hits = len(server.hits)
    err = failure(call(callbacks, "host.http.do_stream", {"url": url}), "host_call_failed")
    assert f"{MAX_OPEN_STREAMS} host.http streams open" in err["message"]
    assert "host.http.stream_close" in err["message"]
    assert err["retryable"] is True
    assert len(server.hits) == hits  # refused before it was sent
    # Another plugin is not held back, and a closed stream frees its place.
    other = call(callbacks, "host.http.do_stream", {"url": url}, "p2")
    result(
        call(callbacks, "host.http.stream_close", {"stream_id": result(other)["stream_id"]}, "p2")
    )
    result(call(callbacks, "host.http.stream_close", {"stream_id": opened.pop()}))
    opened.append(result(call(callbacks, "host.http.do_stream", {"url": url}))["stream_id"])
    for stream_id in opened:
        result(call(callbacks, "host.http.stream_close", {"stream_id": stream_id}))


def test_stream_of_an_empty_body_is_done_at_once(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    url = server.url("/status?code=204")
    opened = result(call(callbacks, "host.http.do_stream", {"request": {"URL": url}}))
    assert opened["status_code"] == 204
    assert read_all(callbacks, opened["stream_id"]) == [{"payload": "", "error": "", "done": True}]


def test_streams_belong_to_the_plugin_that_opened_them(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    url = server.url("/stream?count=2")
    stream_id = result(call(callbacks, "host.http.do_stream", {"url": url}, "owner"))["stream_id"]
    read = call(callbacks, "host.http.stream_read", {"stream_id": stream_id}, "thief")
    assert stream_id in failure(read, "unknown_stream")["message"]
    # Closing someone else's stream does nothing and reveals nothing.
    assert (
        result(call(callbacks, "host.http.stream_close", {"stream_id": stream_id}, "thief")) == {}
    )
    body = b"".join(unb64(r["payload"]) for r in read_all(callbacks, stream_id, "owner"))
    assert body == b"chunk-0\nchunk-1\n"


def test_stream_close_ends_the_stream(callbacks: HostCallbacks, server: LocalServer) -> None:
    url = server.url("/stream?count=50&interval=0.05")
    stream_id = result(call(callbacks, "host.http.do_stream", {"url": url}))["stream_id"]
    first = result(call(callbacks, "host.http.stream_read", {"stream_id": stream_id}))
    assert unb64(first["payload"]).startswith(b"chunk-0")
    assert result(call(callbacks, "host.http.stream_close", {"stream_id": stream_id})) == {}
    assert result(call(callbacks, "host.http.stream_close", {"stream_id": stream_id})) == {}
    failure(call(callbacks, "host.http.stream_read", {"stream_id": stream_id}), "unknown_stream")


def test_unknown_stream_id_is_unknown_stream(callbacks: HostCallbacks) -> None:
    err = failure(
        call(callbacks, "host.http.stream_read", {"StreamID": "x", "STREAM_ID": "nope"}),
        "unknown_stream",
    )
    assert "nope" in err["message"]


def test_plugin_unloaded_closes_only_that_plugins_streams(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    url = server.url("/stream?count=3")
    mine = [
        result(call(callbacks, "host.http.do_stream", {"url": url}, "a"))["stream_id"]
        for _ in range(2)
    ]
    theirs = result(call(callbacks, "host.http.do_stream", {"url": url}, "b"))["stream_id"]
    callbacks.plugin_unloaded("a")
    for stream_id in mine:
        failure(
            call(callbacks, "host.http.stream_read", {"stream_id": stream_id}, "a"),
            "unknown_stream",
        )
    body = b"".join(unb64(r["payload"]) for r in read_all(callbacks, theirs, "b"))
    assert body == b"chunk-0\nchunk-1\nchunk-2\n"


def test_oversized_stream_ends_with_an_error(make: Make, server: LocalServer) -> None:
    callbacks = make(max_response_bytes=10_000)
    url = server.url("/big?size=50000&chunked=1")
    stream_id = result(call(callbacks, "host.http.do_stream", {"url": url}))["stream_id"]
    reads = read_all(callbacks, stream_id)
    delivered = sum(len(unb64(read["payload"])) for read in reads)
    assert delivered <= 10_000
    assert reads[-1]["done"] is True
    assert reads[-1]["payload"] == ""
    assert "http.max-response-bytes" in reads[-1]["error"]
    assert all(read["error"] == "" for read in reads[:-1])


def test_stalled_stream_read_ends_with_a_timeout_error(make: Make, server: LocalServer) -> None:
    callbacks = make(timeout_seconds=0.3)
    url = server.url("/stream?count=2&interval=3")
    stream_id = result(call(callbacks, "host.http.do_stream", {"url": url}))["stream_id"]
    reads = read_all(callbacks, stream_id)
    assert unb64(reads[0]["payload"]) == b"chunk-0\n"
    assert reads[-1]["done"] is True
    assert "timed out" in reads[-1]["error"]


def test_a_long_stream_is_not_cut_by_the_timeout(make: Make, server: LocalServer) -> None:
    callbacks = make(timeout_seconds=0.3)
    url = server.url("/stream?count=6&interval=0.1")
    stream_id = result(call(callbacks, "host.http.do_stream", {"url": url}))["stream_id"]
    reads = read_all(callbacks, stream_id)
    assert reads[-1] == {"payload": "", "error": "", "done": True}
    assert b"".join(unb64(r["payload"]) for r in reads).count(b"chunk-") == 6


def test_concurrent_reads_of_one_stream_lose_nothing(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    url = server.url("/stream?count=200")
    stream_id = result(call(callbacks, "host.http.do_stream", {"url": url}))["stream_id"]
    pieces: list[bytes] = []
    lock = threading.Lock()

    def reader() -> None:
        while True:
            answer = call(callbacks, "host.http.stream_read", {"stream_id": stream_id})
            if not answer["ok"] or answer["result"]["done"]:
                return
            with lock:
                pieces.append(unb64(answer["result"]["payload"]))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(p) for p in pieces) == len("".join(f"chunk-{i}\n" for i in range(200)))


def test_close_ends_streams_and_later_calls_answer_errors(make: Make, server: LocalServer) -> None:
    callbacks = make()
    stream_id = result(
        call(callbacks, "host.http.do_stream", {"url": server.url("/stream?count=3")})
    )["stream_id"]
    callbacks.close()
    failure(call(callbacks, "host.http.stream_read", {"stream_id": stream_id}), "unknown_stream")
    for method in ("host.http.do", "host.http.do_stream"):
        failure(call(callbacks, method, {"url": server.url("/echo")}), "host_call_failed")
    assert result(call(callbacks, "host.log", {"message": "still fine"})) == {}


# hot reload


def test_a_changed_policy_holds_from_the_next_request(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    url = server.url("/echo")
    assert echoed(call(callbacks, "host.http.do", {"url": url}))["method"] == "GET"
    callbacks.http.configure(HttpPolicy(allowed_hosts=["other.test"]))
    failure(call(callbacks, "host.http.do", {"url": url}), "host_not_allowed")
    callbacks.http.configure(HttpPolicy(max_response_bytes=10))
    failure(call(callbacks, "host.http.do", {"url": url}), "response_too_large")
    callbacks.http.configure(HttpPolicy(timeout_seconds=0.3))
    failure(call(callbacks, "host.http.do", {"url": server.url("/slow?seconds=2")}), "host_timeout")
    callbacks.http.configure(HttpPolicy())
    assert echoed(call(callbacks, "host.http.do", {"url": url}))["method"] == "GET"


def test_a_changed_proxy_takes_a_new_client_and_open_streams_finish_on_the_old(
    callbacks: HostCallbacks, server: LocalServer
) -> None:
    opened = result(
        call(callbacks, "host.http.do_stream", {"url": server.url("/stream?count=3&interval=0.02")})
    )
    # The server doubles as the proxy: a name no resolver knows reaches it only through it.
    callbacks.http.configure(HttpPolicy(proxy_url=server.base_url))
    echo = echoed(call(callbacks, "host.http.do", {"url": "http://api.example.test/echo"}))
    assert echo["target"] == "http://api.example.test/echo"
    reads = read_all(callbacks, opened["stream_id"])
    body = b"".join(unb64(read["payload"]) for read in reads)
    assert body == b"chunk-0\nchunk-1\nchunk-2\n"
