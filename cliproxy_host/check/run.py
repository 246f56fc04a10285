"""One check run: the plugin's backend, calls bounded in time, and how each call came back.

A plugin that hangs in-process can only be abandoned, never stopped, so every call runs
on a daemon thread with a deadline; a hang marks the run `stuck` and later checks skip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

import orjson

from ..abi import LIBRARY_SUFFIX, HostHandler
from ..backends.protocol import PluginBackend
from ..callbacks.scopes import FIELD, SCOPED_METHODS
from ..discovery import is_valid_id, parse_name
from ..envelope import decode
from ..errors import (
    PluginCallFailed,
    PluginCrashed,
    PluginError,
    PluginResponseError,
    PluginTimeout,
    PluginUnavailable,
)
from ..host.registry import Registration
from . import limits
from .fakehost import FakeHost
from .samples import request_for

BackendFactory = Callable[[str, Path, HostHandler], PluginBackend]
_T = TypeVar("_T")

ENVELOPE_FIX: Final = (
    'return 0 with a UTF-8 JSON envelope: {"ok": true, "result": ...} or '
    '{"ok": false, "error": {"code": ..., "message": ...}}'
)
CRASH_FIX: Final = (
    "run the plugin under a debugger or AddressSanitizer with this request; in Rust, catch "
    "panics at the boundary"
)
TIMEOUT_FIX: Final = (
    "answer promptly: calls hold a host thread; bound network waits and look for deadlocks"
)


class Hung(Exception):
    """A call into the plugin did not return in time."""


def bounded(fn: Callable[[], _T], timeout: float) -> _T:
    """fn() on a daemon thread: a plugin that hangs in-process can only be abandoned, not
    stopped, and a daemon thread does not keep the checker from exiting."""
    box: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=target, name="cliproxy-check", daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:
        raise Hung
    done, value = box[0]
    if done:
        return cast(_T, value)
    raise value


@dataclass(frozen=True)
class Answer:
    """What one call came back with, classified the way the checks judge it."""

    kind: Literal["ok", "error", "broken", "crashed", "timeout"]
    result: Any = None
    code: str = ""
    message: str = ""

    @property
    def well_formed(self) -> bool:
        return self.kind in ("ok", "error")

    @property
    def fix(self) -> str:
        """The fix for an answer that is not a well-formed envelope."""
        return {"crashed": CRASH_FIX, "timeout": TIMEOUT_FIX}.get(self.kind, ENVELOPE_FIX)

    def describe(self) -> str:
        if self.kind == "ok":
            return "answered ok"
        if self.kind == "error":
            return f"answered error {self.code}: {self.message}"
        if self.kind == "crashed":
            return f"crashed the plugin: {self.message}"
        return self.message


class ResponseLog:
    """Every response body seen in the run: the UTF-8 JSON check reads it at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.bad = 0
        self.examples: list[str] = []

    def record(self, method: str, raw: bytes) -> str | None:
        """Count the response; what is wrong with it, if it is not UTF-8 JSON."""
        problem = None
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = f"{method}: response is not UTF-8 ({exc.reason} at byte {exc.start})"
        else:
            try:
                orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                problem = f"{method}: response is not JSON ({exc})"
        with self._lock:
            self.count += 1
            if problem:
                self.bad += 1
                if len(self.examples) < limits.MAX_LISTED:
                    self.examples.append(problem)
        return problem


def plugin_id_for(path: Path) -> str:
    """The ID the host would give the file, or a stand-in when the name is not valid."""
    parsed = parse_name(path.name, LIBRARY_SUFFIX)
    if parsed:
        return parsed[0]
    stem = path.name.split(".")[0]
    return stem if is_valid_id(stem) else "check-plugin"


class Run:
    """State shared by the checks of one run."""

    def __init__(self, path: Path, factory: BackendFactory, isolated: bool, cycles: int) -> None:
        # Absolute, because dlopen searches the library path for a bare file name.
        self.path = path.absolute()
        self.plugin_id = plugin_id_for(path)
        self.factory = factory
        self.isolated = isolated
        self.program = False  # a plugin program (docs/PROTOCOL.md), not a library
        self.slack = limits.ISOLATED_SLACK if isolated else 0.0
        self.cycles = cycles
        self.host = FakeHost()
        self.responses = ResponseLog()
        self.backend: PluginBackend | None = None
        self.registration: Registration | None = None
        self.answers: dict[str, Answer] = {}
        # Why the plugin can take no more calls (it crashed or hung), once it can't.
        self.stuck: str | None = None
        self._hung_inprocess = False

    def hung(self, reason: str) -> str:
        """Record that the plugin stopped answering; in-process it can only be abandoned."""
        self._hung_inprocess = not self.isolated
        self.stuck = reason
        return reason

    def open(self) -> PluginBackend:
        """A new backend for the file; raises Hung when loading does not finish in time."""
        return bounded(
            lambda: self.factory(self.plugin_id, self.path, self.host.handler),
            limits.LOAD_TIMEOUT + self.slack,
        )

    def exchange(
        self,
        backend: PluginBackend,
        method: str,
        request: bytes,
        timeout: float | None = None,
    ) -> Answer:
        """One call; every way it can go wrong becomes an Answer. `timeout` bounds it only
        in a backend that ends overruns itself (isolated); `call` bounds the rest.

        As from the real host, a scoped method gets a fresh host_callback_id and
        executor.execute_stream a stream_id of an open stream (a request that is not a
        JSON object goes as it is).
        """
        if method not in SCOPED_METHODS:
            return self._exchange(backend, method, request, timeout)
        try:
            body = orjson.loads(request)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self._exchange(backend, method, request, timeout)
        callback_id = self.host.new_callback_id()
        body[FIELD] = callback_id
        stream = None
        if method == "executor.execute_stream":
            stream = self.host.streams.open(self.plugin_id)
            body["stream_id"] = stream.stream_id
        self.host.enter_scope(callback_id, method)
        try:
            answer = self._exchange(backend, method, orjson.dumps(body), timeout)
        except BaseException:
            if stream is not None:
                self.host.streams.answered(stream, None)
            raise
        finally:
            self.host.leave_scope()
        if stream is not None:
            # The stream outlives this call only when the plugin answered no chunks.
            self.host.streams.answered(stream, answer.result if answer.kind == "ok" else None)
        return answer

    def _exchange(
        self, backend: PluginBackend, method: str, request: bytes, timeout: float | None
    ) -> Answer:
        try:
            raw = backend.call(method, request, limits.CALL_TIMEOUT if timeout is None else timeout)
        except PluginResponseError as exc:
            return Answer("broken", message=exc.message)
        except (PluginCrashed, PluginUnavailable) as exc:
            self.stuck = f"the plugin crashed in {method}"
            return Answer("crashed", code=exc.code, message=exc.message)
        except PluginTimeout as exc:
            self.stuck = f"{method} did not answer in time"
            return Answer("timeout", code=exc.code, message=exc.message)
        except PluginCallFailed as exc:
            return Answer("broken", message=f"{exc.message} (no error envelope)")
        except PluginError as exc:
            # A non-zero return with an error envelope is the plugin's error, as the ABI allows.
            return Answer("error", code=exc.code, message=exc.message)
        problem = self.responses.record(method, raw)
        if problem:
            return Answer("broken", message=problem)
        try:
            return Answer("ok", result=decode(raw, plugin_id=self.plugin_id, method=method))
        except PluginResponseError as exc:
            return Answer("broken", message=exc.message)
        except PluginError as exc:
            return Answer("error", code=exc.code, message=exc.message)

    def call(
        self,
        method: str,
        request: Any,
        *,
        backend: PluginBackend | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """One call to the open backend (or `backend`), bounded by `timeout` or CALL_TIMEOUT."""
        timeout = limits.CALL_TIMEOUT if timeout is None else timeout
        target = backend or self.backend
        assert target is not None, "a check that calls the plugin ran without a loaded plugin"
        data = request if isinstance(request, bytes) else orjson.dumps(request)
        try:
            return bounded(
                lambda: self.exchange(target, method, data, timeout), timeout + self.slack
            )
        except Hung:
            return Answer(
                "timeout", message=self.hung(f"{method} did not answer within {timeout:g} s")
            )

    def request_for(self, method: str) -> dict[str, Any]:
        """A minimal valid request for `method`."""
        return request_for(method, self.plugin_id, self.registration)

    def close(self, backend: PluginBackend) -> None:
        # Closing waits for calls in flight; after an in-process hang that would never end.
        if self._hung_inprocess:
            return
        try:
            bounded(backend.close, limits.LOAD_TIMEOUT)
        except Hung:
            self.hung("closing did not finish (plugin.shutdown or shutdown() hangs)")

    def close_backend(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None:
            self.close(backend)

    def finish(self) -> None:
        """The run is over: close the backend, abort the streams still open."""
        self.close_backend()
        self.host.streams.shutdown()
