"""The host a plugin talks to during `check`: it judges every host call and answers locally.

Requests to host.http.* are judged by the real host's rules (`callbacks.http.read_request`)
but never sent: host.http.do answers a fixed 200, and streams are one chunk long.
host.stream.emit/close go to the run's `StreamWatch` (real streams, judged emits). A
host.log or host.http.* call made while a scoped call runs on the same thread must echo
that call's host_callback_id (`scope_warnings` otherwise). Every
answer, error or not, goes through the one answer gate (`callbacks.gate.gated`), like
every other path that a plugin's host->call reaches.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from typing import Any, Final

import orjson

from ..abi import HostHandler
from ..callbacks.http import request_problems
from ..callbacks.permissions import OWN_CALLBACKS
from ..callbacks.scopes import FIELD
from ..envelope import b64encode, ci_get, ok
from ..errors import HostCallFailed, InvalidRequest
from ..gate import gated
from .streams import StreamWatch

_LOG_LEVELS: Final = frozenset(
    {"trace", "debug", "info", "warn", "warning", "error", "fatal", "panic", "critical"}
)
# host.http.do answers this whatever was asked: the check never touches the network.
_HTTP_ANSWER: Final = {
    "StatusCode": 200,
    "Headers": {"Content-Type": ["application/json"]},
    "Body": b64encode(b"{}"),
}
_STREAM_HEADERS: Final = {"Content-Type": ["application/json"]}


class FakeHost:
    """The host side of a run: what the plugin called, and what it got wrong.

    `errors` are calls the real host would refuse; `warnings` are calls it would accept
    but that are probably not what the plugin meant. `handler` is what the backend calls.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._ids = itertools.count(1)
        self._issued: set[str] = set()
        # Stream ID -> chunks read so far, while the stream is open.
        self._reads: dict[str, int] = {}
        self.streams = StreamWatch()
        # The scoped call this thread is running: (host_callback_id, method).
        self._scope = threading.local()
        self._callback_ids = itertools.count(1)
        self.scope_warnings: list[str] = []
        self.scoped_calls = 0  # host.log/host.http.* calls made within a scoped call
        self.handler: HostHandler = gated(self._answer)

    def new_callback_id(self) -> str:
        return f"check-scope-{next(self._callback_ids)}"

    def enter_scope(self, callback_id: str, method: str) -> None:
        """This thread now runs `method` with `callback_id` (until leave_scope)."""
        self._scope.current = (callback_id, method)

    def leave_scope(self) -> None:
        self._scope.current = None

    def _judge_echo(self, method: str, body: dict[str, Any]) -> None:
        current: tuple[str, str] | None = getattr(self._scope, "current", None)
        if current is None:
            return
        callback_id, during = current
        with self._lock:
            self.scoped_calls += 1
        echoed = ci_get(body, FIELD)
        if echoed is None:
            self._note(self.scope_warnings, f"{method} during {during} has no {FIELD}")
        elif echoed != callback_id:
            self._note(
                self.scope_warnings,
                f"{method} during {during} has {FIELD} {echoed!r}, not the call's",
            )

    def _note(self, into: list[str], problem: str) -> None:
        with self._lock:
            if problem not in into:
                into.append(problem)

    def _answer(self, plugin_id: str, method: str, request: bytes) -> bytes:
        with self._lock:
            self.calls[method] += 1
        body = self._parse(method, request)
        if method == "host.stream.emit":
            return ok(self.streams.emit(plugin_id, body))
        if method == "host.stream.close":
            return ok(self.streams.close(plugin_id, body))
        if method == "host.log" or method.startswith("host.http."):
            self._judge_echo(method, body)
        if method == "host.log":
            return self._log(body)
        if method in ("host.http.do", "host.http.do_stream"):
            return self._http(method, body)
        if method in ("host.http.stream_read", "host.http.stream_close"):
            return self._stream(method, body)
        if method in OWN_CALLBACKS:
            # A check runs one plugin: no bus, peers or services to reach; the call is
            # recorded (the permissions check lists it) and answered empty.
            return ok({})
        self._note(self.warnings, f"called unknown host method {method!r}")
        raise HostCallFailed(f"unknown host method {method!r}")

    def _parse(self, method: str, request: bytes) -> dict[str, Any]:
        try:
            text = request.decode("utf-8")
        except UnicodeDecodeError:
            self._note(self.errors, f"{method}: request is not UTF-8")
            raise InvalidRequest("request is not UTF-8") from None
        try:
            body = orjson.loads(text) if text.strip() else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            self._note(self.errors, f"{method}: request is not a JSON object")
            raise InvalidRequest("request must be a JSON object")
        return body

    def _log(self, body: dict[str, Any]) -> bytes:
        level = ci_get(body, "level")
        if not isinstance(level, str) or level.lower() not in _LOG_LEVELS:
            self._note(
                self.warnings,
                f"host.log: level {level!r} is not trace/debug/info/warn/error (logged at debug)",
            )
        message = ci_get(body, "message")
        if not isinstance(message, str) or not message:
            self._note(self.warnings, "host.log: message is missing or not a string")
        fields = ci_get(body, "fields")
        if fields is not None and not isinstance(fields, dict):
            self._note(self.warnings, "host.log: fields is not an object")
        return ok({})

    def _http(self, method: str, body: dict[str, Any]) -> bytes:
        problems = request_problems(body)
        if problems:
            for problem in problems:
                self._note(self.errors, f"{method}: {problem}")
            raise InvalidRequest("; ".join(problems))
        if method == "host.http.do":
            return ok(_HTTP_ANSWER)
        stream_id = f"check-{next(self._ids)}"
        with self._lock:
            self._issued.add(stream_id)
            self._reads[stream_id] = 0
        return ok({"status_code": 200, "headers": _STREAM_HEADERS, "stream_id": stream_id})

    def _stream(self, method: str, body: dict[str, Any]) -> bytes:
        stream_id = ci_get(body, "stream_id")
        with self._lock:
            issued = isinstance(stream_id, str) and stream_id in self._issued
            reads = self._reads.get(stream_id) if issued else None
            if issued and (method == "host.http.stream_close" or reads):
                # Closed, or read to the end: forgotten, as the real host does.
                self._reads.pop(stream_id, None)
            elif reads == 0:
                self._reads[stream_id] = 1
        if not issued:
            self._note(
                self.errors,
                f"{method}: stream_id {stream_id!r} was never answered by host.http.do_stream",
            )
            raise InvalidRequest(f"unknown stream_id {stream_id!r}")
        if method == "host.http.stream_close":
            return ok({})
        if reads is None:
            self._note(self.errors, f"{method}: stream {stream_id} read after it was done")
            raise InvalidRequest(f"stream {stream_id} is finished")
        if reads == 0:
            return ok({"payload": b64encode(b"{}"), "error": "", "done": False})
        return ok({"payload": "", "error": "", "done": True})
