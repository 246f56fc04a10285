"""Plugin: methods by decorator, the handshake, registration and the serving loop."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .connection import ID_VARIABLE, TOKEN_VARIABLE, Connection
from .host import Host
from .request import Request

ABI_VERSION = 1
SCHEMA_VERSION = 3
# Threads kept waiting for the next call beyond the one reading; more exit when idle.
_SPARE_THREADS = 4
# A thread standing by reads once the reading thread has been running a call this long
# (it reads on when the call is done). It looks this often, rather than being woken at
# every call: that wake-up, and the GIL it takes, would cost a small call more than
# the call itself.
_QUIET_S = 0.001
# Threads standing by doze (woken by the next call) once no call has started for this
# long: an idle plugin wakes no thread.
_DOZE_AFTER_S = 0.1
_DOZE_S = 1.0  # how long a thread dozes at most before it looks again anyway
Handler = Callable[[Request], dict[str, Any] | None]


class PluginFailure(Exception):
    """Raise from a method to answer an error envelope with this code (ABI.md 2.1)."""

    def __init__(self, code: str, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def envelope(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retryable is not None:
            error["retryable"] = self.retryable
        return {"ok": False, "error": error}


class Plugin:
    """A plugin program. Declare its methods with `@plugin.method(name)`, then `run()`.

    Leader and followers: one thread reads; when it has read a call it runs the call
    itself and reads again after it, so a call reaches its method without a hand-off
    between threads. Another thread stands by and takes the reading over when a call runs
    longer than _QUIET_S, so many calls run at once and pings are answered. A method
    calling the host (`plugin.host`) reads the answer itself when no one else reads
    (Connection.request); a call read meanwhile goes to a thread standing by.
    """

    def __init__(
        self,
        name: str,
        *,
        version: str,
        capabilities: Iterable[str] | Mapping[str, Any],
        author: str = "unknown",
        repository: str = "https://example.invalid/plugin",
        config_fields: Iterable[dict[str, Any]] = (),
    ) -> None:
        self.name = name
        self.version = version
        # Flags by name, or a mapping that also carries settings such as
        # executor_input_formats (ABI.md section 3).
        self.capabilities: dict[str, Any] = (
            dict(capabilities)
            if isinstance(capabilities, Mapping)
            else dict.fromkeys(capabilities, True)
        )
        self.metadata: dict[str, Any] = {
            "Name": name,
            "Version": version,
            "Author": author,
            "GitHubRepository": repository,
            "ConfigFields": list(config_fields),
        }
        self._methods: dict[str, Handler] = {}
        self._on_config: Callable[[Request], None] | None = None
        self._on_shutdown: Callable[[], None] | None = None
        self._count = threading.Lock()
        self._spare = 0  # threads not running a call (reading, or standing by)
        self._state = threading.Condition()  # guards _queue and _standing
        self._queue: deque[dict[str, Any]] = deque()  # calls read by a thread busy waiting
        self._standing = 0  # threads standing by in _stand_by
        self._watching = False  # one of them looks every _QUIET_S
        self._dozing = 0  # the others doze
        self._last_call = float("-inf")  # when the last call started
        self._done = threading.Event()
        self.plugin_id = os.environ.get(ID_VARIABLE, "")
        self._connection: Connection | None = None

    # -- declaring ----------------------------------------------------------------------

    def method(self, name: str) -> Callable[[Handler], Handler]:
        """Serve `name` with the decorated function: a Request in, a result dict out
        (None reads as {}); raise PluginFailure for an error envelope."""

        def register(handler: Handler) -> Handler:
            self._methods[name] = handler
            return handler

        return register

    def on_config(self, handler: Callable[[Request], None]) -> Callable[[Request], None]:
        """Called with plugin.register and plugin.reconfigure (`request.config_yaml`);
        raise PluginFailure to refuse the config."""
        self._on_config = handler
        return handler

    def on_shutdown(self, handler: Callable[[], None]) -> Callable[[], None]:
        self._on_shutdown = handler
        return handler

    @property
    def host(self) -> Host:
        """The host callbacks; usable once run() has connected."""
        if self._connection is None:
            raise RuntimeError("plugin.host is available once plugin.run() has connected")
        return Host(self._connection)

    # -- serving ------------------------------------------------------------------------

    def run(self, connection: Connection | None = None) -> None:
        """Greet the host and serve calls until it closes the connection."""
        if not self.plugin_id:
            raise SystemExit(f"{ID_VARIABLE} is not set: the host passes the plugin ID")
        conn = connection or Connection.inherited()
        self._connection = conn
        hello = {
            "plugin_id": self.plugin_id,
            "abi_version": ABI_VERSION,
            "schema_version": SCHEMA_VERSION,
        }
        token = os.environ.get(TOKEN_VARIABLE)
        if token:
            hello["token"] = token
        conn.send({"jsonrpc": "2.0", "id": 0, "method": "rpc.hello", "params": hello})
        greeting = conn.read()
        if greeting is None or "error" in greeting:
            reason = (greeting or {}).get("error", {}).get("message", "connection closed")
            raise SystemExit(f"the host refused this plugin: {reason}")
        conn.on_call = self._queue_call
        conn.on_eof = self._finish
        self._spare = 1
        self._start_thread(conn, standing_by=False)
        self._done.wait()
        conn.close()

    def _start_thread(self, conn: Connection, *, standing_by: bool = True) -> None:
        threading.Thread(target=self._follow, args=(conn, standing_by), daemon=True).start()

    def _follow(self, conn: Connection, standing_by: bool) -> None:
        """Read when no one else does and run each call read on this thread; otherwise
        stand by, looking every _QUIET_S whether the reading thread went off to run a call
        a while ago (then this one reads) or another thread queued a call for it."""
        while not self._done.is_set():
            message = self._queued_call()
            if message is None:
                # A thread back from its call reads at once; one standing by leaves the
                # turn to it for _QUIET_S, the time a small call takes many times over.
                recent = time.monotonic() - conn.turn_free_since < _QUIET_S
                if (standing_by and recent) or not conn.turn.acquire(blocking=False):
                    self._stand_by()
                    standing_by = True
                    continue
                try:
                    message = conn.next_call()
                finally:
                    conn.release_turn()
                if message is None:
                    self._finish()
                    return
            standing_by = False
            if not self._run(conn, message):
                return

    def _stand_by(self) -> None:
        """Wait up to _QUIET_S as the one thread watching the reader while calls come, or
        doze until a call is queued, a call starts with no one watching, or the
        connection ends."""
        with self._state:
            if self._queue or self._done.is_set():
                return
            self._standing += 1
            try:
                if not self._watching and time.monotonic() - self._last_call < _DOZE_AFTER_S:
                    self._watching = True
                    try:
                        self._state.wait(_QUIET_S)
                    finally:
                        self._watching = False
                else:
                    self._dozing += 1
                    try:
                        self._state.wait(_DOZE_S)
                    finally:
                        self._dozing -= 1
            finally:
                self._standing -= 1

    def _queued_call(self) -> dict[str, Any] | None:
        if not self._queue:
            return None
        with self._state:
            return self._queue.popleft() if self._queue else None

    def _queue_call(self, message: dict[str, Any]) -> None:
        """A call read by a thread that cannot run it (it waits for a host answer, or
        reads for threads that do): a standing-by thread runs it, or a new one."""
        with self._state:
            self._queue.append(message)
            if self._standing:
                self._state.notify()
                return
        assert self._connection is not None
        with self._count:
            self._spare += 1
        self._start_thread(self._connection)

    def _run(self, conn: Connection, message: dict[str, Any]) -> bool:
        """Run one call on this thread; False when this thread should end after it."""
        self._last_call = time.monotonic()
        if self._dozing and not self._watching:  # the first call after a quiet spell
            with self._state:
                self._state.notify()
        with self._count:
            self._spare -= 1
            grow = self._spare == 0
            if grow:
                self._spare += 1
        if grow:  # someone must read while this thread runs the call
            self._start_thread(conn)
        self._serve(conn, message)
        with self._count:
            if self._spare >= _SPARE_THREADS:
                return False
            self._spare += 1
        return True

    def _finish(self) -> None:
        self._done.set()
        with self._state:
            self._state.notify_all()

    def _serve(self, conn: Connection, message: dict[str, Any]) -> None:
        method = str(message["method"])
        params = message.get("params")
        request = Request(method, params if isinstance(params, dict) else {})
        envelope = self._answer(request)
        with contextlib.suppress(OSError):  # the host is gone; the loop ends on the EOF
            conn.send({"jsonrpc": "2.0", "id": message["id"], "result": envelope})
        conn.answered_at = time.perf_counter()
        if method == "plugin.shutdown" and self._on_shutdown is not None:
            threading.Thread(target=self._on_shutdown, daemon=True).start()

    def _answer(self, request: Request) -> dict[str, Any]:
        try:
            if request.method in ("plugin.register", "plugin.reconfigure"):
                if self._on_config is not None:
                    self._on_config(request)
                result: dict[str, Any] | None = {
                    "schema_version": SCHEMA_VERSION,
                    "metadata": self.metadata,
                    "capabilities": self.capabilities,
                }
            elif request.method == "plugin.shutdown":
                result = {}
            else:
                handler = self._methods.get(request.method)
                if handler is None:
                    raise PluginFailure(
                        "unknown_method", f"{self.name} does not serve {request.method}"
                    )
                result = handler(request)
        except PluginFailure as failure:
            return failure.envelope()
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)  # the host logs it with the plugin ID
            return {"ok": False, "error": {"code": "plugin_call_failed", "message": str(exc)}}
        return {"ok": True, "result": result or {}}
