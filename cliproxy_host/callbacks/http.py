"""host.http.*: HTTP requests the host makes on a plugin's behalf, under the host's policy."""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Final

import httpx

from ..config import HttpPolicy
from ..envelope import b64decode, b64encode, ci_get
from ..errors import (
    HostCallFailed,
    HostNotAllowed,
    InvalidRequest,
    PluginError,
    ResponseTooLarge,
    UnknownStream,
    UpstreamError,
    UpstreamTimeout,
)

HOST_NOT_ALLOWED: Final = "host_not_allowed"
HOST_TIMEOUT: Final = "host_timeout"
RESPONSE_TOO_LARGE: Final = "response_too_large"
UNKNOWN_STREAM: Final = "unknown_stream"
UPSTREAM_ERROR: Final = "upstream_error"

log = logging.getLogger(__name__)

# What one host.http.do or do_stream request of a plugin may hold; more is invalid_request,
# refused before anything is sent. Headers count each value (a list of 3 is 3 headers).
MAX_REQUEST_HEADERS: Final = 256
MAX_REQUEST_HEADER_BYTES: Final = 64 * 1024  # names and values, summed
MAX_URL_LENGTH: Final = 16 * 1024  # characters
MAX_REQUEST_BODY_BYTES: Final = 32 * 1024 * 1024  # decoded
# Open host.http streams per plugin: each holds a connection of the client all plugins
# share (httpx's pool holds 100), so one plugin that never closes its streams cannot take
# every connection.
MAX_OPEN_STREAMS: Final = 32

# RFC 9110 token: what HTTP methods and header names are made of.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Go's client ignores these in a request's header map and writes its own, as we do: a
# plugin's Host must not differ from the URL host the allow-list checked.
_IGNORED_REQUEST_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "trailer"}
)
# The body a plugin gets is de-chunked, so this header would describe it wrongly (Go drops it too).
_DROPPED_RESPONSE_HEADERS: Final = frozenset({"Transfer-Encoding"})


@dataclass(slots=True, eq=False)
class _Stream:
    """An open streamed response and the plugin that owns it."""

    owner: str
    host: str
    response: httpx.Response
    chunks: Iterator[bytes]
    received: int = 0
    closed: bool = False
    # Held for a whole read, so that a stream is only ever touched by one thread.
    lock: threading.Lock = field(default_factory=threading.Lock)


def host_matches(host: str, pattern: str) -> bool:
    """Match a host name against an allowed-hosts pattern, label by label.

    `*.example.com` admits any subdomain of example.com (not example.com itself); other
    wildcards stay inside one dot-separated label, so `127.0.0.*` admits 127.0.0.1 but
    never 127.0.0.evil.test.
    """
    host = host.lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    labels, wanted = host.split("."), pattern.split(".")
    return len(labels) == len(wanted) and all(
        fnmatch.fnmatchcase(label, want) for label, want in zip(labels, wanted, strict=True)
    )


def _new_client(policy: HttpPolicy) -> httpx.Client:
    """The client every plugin's requests share, for the policy's proxy and timeout."""
    return httpx.Client(
        proxy=policy.proxy_url,
        timeout=policy.timeout_seconds,
        follow_redirects=False,  # a redirect could lead off the allow-list
        trust_env=False,  # only the policy decides proxies and certificates
        # Every plugin shares this client: it must not carry one plugin's cookies to another.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        # Bodies are passed on undecoded, so they always match Content-Encoding; a plugin
        # that wants compression asks for it and gets the compressed bytes, as from Go.
        headers={"Accept-Encoding": "identity"},
    )


class HttpBridge:
    """host.http.do and the host.http streams, sharing one HTTP client. Thread-safe.

    The public methods take the calling plugin's ID and its parsed request object, answer
    the result object, and raise PluginError for everything a plugin may get wrong or meet.
    """

    def __init__(self, policy: HttpPolicy) -> None:
        self._timeout = policy.timeout_seconds
        self._max_bytes = policy.max_response_bytes
        self._patterns = tuple(pattern.lower() for pattern in policy.allowed_hosts)
        self._client_for = (policy.proxy_url, policy.timeout_seconds)
        self._client = _new_client(policy)
        # Clients a changed proxy replaced: requests and streams may still use them.
        self._retired: list[httpx.Client] = []
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._closed = False

    def configure(self, policy: HttpPolicy) -> None:
        """The `http:` section changed (a hot reload): in force from the next request on.

        Requests and streams under way finish as they began. A changed proxy or timeout
        takes a new client; the old one is closed with the bridge (it may still carry an
        open stream).
        """
        with self._lock:
            self._timeout = policy.timeout_seconds
            self._max_bytes = policy.max_response_bytes
            self._patterns = tuple(pattern.lower() for pattern in policy.allowed_hosts)
            wanted = (policy.proxy_url, policy.timeout_seconds)
            if wanted == self._client_for or self._closed:
                return
            self._retired.append(self._client)
            self._client = _new_client(policy)
            self._client_for = wanted

    def do(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.http.do: the whole response as `{"StatusCode", "Headers", "Body"}`."""
        outgoing = self._build(plugin_id, request)
        host = outgoing.url.host
        # Go's Client.Timeout bounds the whole exchange; httpx's timeouts bound each step.
        deadline = time.monotonic() + self._timeout
        response = self._send(outgoing)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > self._max_bytes:
                    raise self._too_large(host)
                if time.monotonic() > deadline:
                    raise self._timed_out(host)
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, host) from None
        finally:
            response.close()
        # Host and path only: queries and user info may carry credentials.
        log.debug(
            "plugin %s: %s %s%s -> %d, %d bytes",
            plugin_id,
            outgoing.method,
            host,
            outgoing.url.path,
            response.status_code,
            size,
        )
        return {
            "StatusCode": response.status_code,
            "Headers": _response_headers(response.headers),
            "Body": b64encode(b"".join(chunks)),
        }

    def do_stream(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.http.do_stream: status and headers now, the body through stream_read."""
        outgoing = self._build(plugin_id, request)
        with self._lock:
            full = self._open_streams(plugin_id) >= MAX_OPEN_STREAMS
        if full:
            raise _too_many_streams()
        response = self._send(outgoing)
        stream = _Stream(plugin_id, outgoing.url.host, response, response.iter_raw())
        stream_id = uuid.uuid4().hex
        with self._lock:
            # Counted again: other threads of the plugin may have opened streams meanwhile.
            full = self._open_streams(plugin_id) >= MAX_OPEN_STREAMS
            accepted = not self._closed and not full
            if accepted:
                self._streams[stream_id] = stream
        if not accepted:
            response.close()
            raise _too_many_streams() if full else _shutting_down()
        log.debug(
            "plugin %s: %s %s%s -> %d, streaming as %s",
            plugin_id,
            outgoing.method,
            outgoing.url.host,
            outgoing.url.path,
            response.status_code,
            stream_id,
        )
        return {
            "status_code": response.status_code,
            "headers": _response_headers(response.headers),
            "stream_id": stream_id,
        }

    def stream_read(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.http.stream_read: the next chunk, `{"payload", "error", "done"}`.

        `done` always comes with an empty payload: plugins built for the Go host drop the
        payload of a done answer. A finished stream is forgotten; closing it is still fine.
        """
        stream_id = _stream_id(request)
        with self._lock:
            stream = self._streams.get(stream_id)
        if stream is None or stream.owner != plugin_id:
            raise _unknown_stream(stream_id)
        with stream.lock:
            if stream.closed:
                raise _unknown_stream(stream_id)
            failure = ""
            try:
                chunk = next(stream.chunks, b"")
            except httpx.HTTPError as exc:
                chunk, failure = b"", self._transport_error(exc, stream.host).message
            if chunk:
                stream.received += len(chunk)
                if stream.received <= self._max_bytes:
                    return {"payload": b64encode(chunk), "error": "", "done": False}
                failure = self._too_large(stream.host).message
            _release(stream)
        with self._lock:
            self._streams.pop(stream_id, None)
        return {"payload": "", "error": failure, "done": True}

    def stream_close(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.http.stream_close: `{}`. Idempotent; another plugin's stream is left alone."""
        stream_id = _stream_id(request)
        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is None or stream.owner != plugin_id:
                return {}
            del self._streams[stream_id]
        _shut(stream)
        return {}

    def _open_streams(self, plugin_id: str) -> int:
        """How many streams the plugin has open; the caller holds the lock."""
        return sum(1 for stream in self._streams.values() if stream.owner == plugin_id)

    def close_plugin(self, plugin_id: str) -> None:
        """Close every stream the plugin still has open (it is being unloaded)."""
        with self._lock:
            owned = [key for key, stream in self._streams.items() if stream.owner == plugin_id]
            streams = [self._streams.pop(key) for key in owned]
        for stream in streams:
            _shut(stream)

    def close(self) -> None:
        """Close every open stream and the client; later calls answer an error."""
        with self._lock:
            self._closed = True
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            _shut(stream)
        for client in (*self._retired, self._client):
            client.close()

    def _build(self, plugin_id: str, request: Mapping[str, Any]) -> httpx.Request:
        outgoing, problems = read_request(request)
        if outgoing is None:
            raise _invalid(problems[0])
        self._check_allowed(plugin_id, outgoing.url.host)
        return self._client.build_request(
            outgoing.method, outgoing.url, headers=outgoing.headers, content=outgoing.body
        )

    def _check_allowed(self, plugin_id: str, host: str) -> None:
        if self._patterns and not any(host_matches(host, p) for p in self._patterns):
            log.warning(
                "plugin %s: refused a request to %s: the host is not in http.allowed-hosts",
                plugin_id,
                host,
            )
            raise HostNotAllowed(
                f"host {host} is not allowed; the host operator must add it to "
                "http.allowed-hosts for plugins to reach it",
                retryable=False,
                http_status=403,
            )

    def _send(self, outgoing: httpx.Request) -> httpx.Response:
        if self._closed:
            raise _shutting_down()
        try:
            return self._client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, outgoing.url.host) from None

    def _transport_error(self, exc: httpx.HTTPError, host: str) -> PluginError:
        if isinstance(exc, httpx.TimeoutException):
            return self._timed_out(host)
        if isinstance(exc, httpx.LocalProtocolError):
            return _invalid(f"the request to {host} cannot be sent: {exc}")
        reason = str(exc) or type(exc).__name__
        return UpstreamError(f"request to {host} failed: {reason}", retryable=True, http_status=502)

    def _timed_out(self, host: str) -> PluginError:
        return UpstreamTimeout(
            f"request to {host} timed out after {self._timeout:g}s (http.timeout-seconds)",
            retryable=True,
            http_status=504,
        )

    def _too_large(self, host: str) -> PluginError:
        return ResponseTooLarge(
            f"response from {host} exceeds {self._max_bytes} bytes (http.max-response-bytes)",
            retryable=False,
            http_status=502,
        )


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """A host.http.* request that passed every check of `read_request`: what would be sent."""

    method: str
    url: httpx.URL
    headers: list[tuple[bytes, bytes]]
    body: bytes


def read_request(request: Mapping[str, Any]) -> tuple[OutgoingRequest | None, list[str]]:
    """A host.http.do or do_stream request as it would be sent, or what is wrong with it.

    Pure: nothing is sent and no policy is applied (the allow-list is the bridge's), so
    `check`'s fake host judges a plugin's requests by the very rules the real host uses.
    Every problem is listed, in the order the fields are read; the first one is what the
    host answers.
    """
    nested = ci_get(request, "request")
    if nested is not None:
        if not isinstance(nested, Mapping):
            return None, ["field 'request' must be an object"]
        request = nested
    problems: list[str] = []
    method = ci_get(request, "method") or "GET"
    if not isinstance(method, str) or _TOKEN.fullmatch(method) is None:
        problems.append(f"field 'method' must be an HTTP method, got {method!r}")
    url = _url(ci_get(request, "url"), problems)
    headers = _request_headers(ci_get(request, "headers"), problems)
    body = _body(ci_get(request, "body"), problems)
    if problems or url is None or not isinstance(method, str):
        return None, problems
    return OutgoingRequest(method.upper(), url, headers, body), []


def request_problems(request: Mapping[str, Any]) -> list[str]:
    """What host.http.do or do_stream would refuse in `request` (before the allow-list)."""
    return read_request(request)[1]


def _url(value: Any, problems: list[str]) -> httpx.URL | None:
    if not isinstance(value, str) or not value:
        problems.append("field 'url' is required: an absolute http or https URL")
        return None
    if len(value) > MAX_URL_LENGTH:
        problems.append(
            f"url is {len(value)} characters long; host.http takes at most {MAX_URL_LENGTH}: "
            "send long data in the body"
        )
        return None
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        problems.append(f"url {value!r} is invalid: {exc}")
        return None
    if url.scheme not in ("http", "https") or not url.host:
        problems.append(f"url {value!r} is not an absolute http or https URL")
        return None
    return url


def _request_headers(value: Any, problems: list[str]) -> list[tuple[bytes, bytes]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        problems.append('field \'headers\' must be an object such as {"Name": ["value"]}')
        return []
    headers: list[tuple[bytes, bytes]] = []
    for name, given in value.items():
        if name.lower() in _IGNORED_REQUEST_HEADERS or given is None:
            continue
        if _TOKEN.fullmatch(name) is None:
            problems.append(f"header name {name!r} is not a valid HTTP header name")
            continue
        values = [given] if isinstance(given, str) else given
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            problems.append(f"header {name!r} must be a string or a list of strings")
            continue
        # Go sends header strings as their UTF-8 bytes; httpx would insist on ASCII.
        headers.extend((name.encode("utf-8"), v.encode("utf-8")) for v in values)
        if len(headers) > MAX_REQUEST_HEADERS:
            problems.append(
                f"more than {MAX_REQUEST_HEADERS} header values; host.http sends at most "
                f"{MAX_REQUEST_HEADERS}: send fewer headers"
            )
            return []
    size = sum(len(name) + len(v) for name, v in headers)
    if size > MAX_REQUEST_HEADER_BYTES:
        problems.append(
            f"the headers are {size} bytes; host.http sends at most {MAX_REQUEST_HEADER_BYTES} "
            "bytes of them: send fewer or shorter headers"
        )
        return []
    return headers


def _body(value: Any, problems: list[str]) -> bytes:
    # Judged by its base64 length, before decoding: 4 characters carry 3 bytes, less the
    # padding.
    size = len(value) // 4 * 3 - value[-2:].count("=") if isinstance(value, str) else 0
    if size > MAX_REQUEST_BODY_BYTES:
        problems.append(
            f"body is {size} bytes; host.http sends at most "
            f"{MAX_REQUEST_BODY_BYTES} bytes: send a smaller body"
        )
        return b""
    try:
        return b64decode(value, "body")
    except ValueError:
        got = "" if isinstance(value, str) else f", got {type(value).__name__}"
        problems.append(f"body is not a base64 string{got}")
        return b""


def _response_headers(headers: httpx.Headers) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for raw_name, raw_value in headers.raw:
        name = _canonical_name(raw_name.decode("latin-1"))
        if name not in _DROPPED_RESPONSE_HEADERS:
            result.setdefault(name, []).append(raw_value.decode("utf-8", "replace"))
    return result


@functools.lru_cache(maxsize=512)
def _canonical_name(name: str) -> str:
    # Go plugins look headers up by exact canonical key ("Content-Type") in http.Header.
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _stream_id(request: Mapping[str, Any]) -> str:
    value = ci_get(request, "stream_id")
    if not isinstance(value, str) or not value:
        raise _invalid("field 'stream_id' is required: the ID host.http.do_stream answered")
    return value


def _release(stream: _Stream) -> None:
    """Close the stream's response; the caller holds its lock."""
    stream.closed = True
    try:
        stream.response.close()
    except Exception:  # one failed close must not keep the other streams open
        log.warning("closing an HTTP stream of plugin %s failed", stream.owner, exc_info=True)


def _shut(stream: _Stream) -> None:
    with stream.lock:
        _release(stream)


def _invalid(message: str) -> PluginError:
    return InvalidRequest(message, retryable=False, http_status=400)


def _unknown_stream(stream_id: str) -> PluginError:
    return UnknownStream(
        f"no open stream {stream_id!r}: it was closed, finished, or never opened by this plugin",
        retryable=False,
        http_status=404,
    )


def _too_many_streams() -> PluginError:
    return HostCallFailed(
        f"the plugin has {MAX_OPEN_STREAMS} host.http streams open, the most it may: read "
        "them to the end or close them with host.http.stream_close first",
        retryable=True,
        http_status=429,
    )


def _shutting_down() -> PluginError:
    return HostCallFailed("the host is shutting down its HTTP client")
