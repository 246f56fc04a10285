"""Plugin: methods by decorator, the handshake, registration and the serving loop."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .connection import ID_VARIABLE, TOKEN_VARIABLE, Connection
from .host import Host
from .request import Request

ABI_VERSION = 1
SCHEMA_VERSION = 3
# Threads kept waiting for the next call beyond the one reading; more exit when idle.
_SPARE_THREADS = 4
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

    Leader and followers: one thread reads; when it has read a call it hands the reading
    to another thread and runs the call itself, so a call reaches its method without a
    hand-off between threads, many calls run at once, and a method may call the host
    (`plugin.host`) while it runs (another thread reads the answer).
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
        self._turn = threading.Lock()  # held by the thread that reads
        self._count = threading.Lock()
        self._spare = 0  # threads not running a call (reading, or waiting to)
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
        self._spare = 1
        threading.Thread(target=self._follow, args=(conn,), daemon=True).start()
        self._done.wait()
        conn.close()

    def _follow(self, conn: Connection) -> None:
        """Take turns reading; run each call read on this thread."""
        while True:
            with self._turn:
                message = None if self._done.is_set() else self._next_call(conn)
                if message is None:
                    self._done.set()
                    return
                with self._count:
                    self._spare -= 1
                    grow = self._spare == 0
                    if grow:
                        self._spare += 1
            if grow:  # someone must read while this thread runs the call
                threading.Thread(target=self._follow, args=(conn,), daemon=True).start()
            self._serve(conn, message)
            with self._count:
                if self._spare >= _SPARE_THREADS:
                    return
                self._spare += 1

    def _next_call(self, conn: Connection) -> dict[str, Any] | None:
        """Read until a call comes (answering pings and host answers on the way); None at
        the end of the connection."""
        while (message := conn.read()) is not None:
            method = message.get("method")
            if method is None:
                conn.answered(message)
            elif method == "rpc.ping":  # the heartbeat: answered at once, never queued
                conn.send({"jsonrpc": "2.0", "id": message.get("id"), "result": {}})
            elif "id" in message:
                return message
        return None

    def _serve(self, conn: Connection, message: dict[str, Any]) -> None:
        method = str(message["method"])
        params = message.get("params")
        request = Request(method, params if isinstance(params, dict) else {})
        envelope = self._answer(request)
        with contextlib.suppress(OSError):  # the host is gone; the loop ends on the EOF
            conn.send({"jsonrpc": "2.0", "id": message["id"], "result": envelope})
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
