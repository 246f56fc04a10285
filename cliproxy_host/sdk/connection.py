"""The plugin's end of the connection: reading lines, writing them, and its own requests."""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

try:  # faster when the program's Python has it; the standard library otherwise
    import orjson

    _dumps: Callable[[Any], bytes] = orjson.dumps
    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - the test environment has orjson

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode("utf-8")

    _loads = json.loads

ID_VARIABLE = "CLIPROXY_PLUGIN_ID"
FD_VARIABLE = "CLIPROXY_PLUGIN_FD"  # set by the host for a program it starts
SOCKET_VARIABLE = "CLIPROXY_PLUGIN_SOCKET"  # plugins.socket, for a program started elsewhere
TOKEN_VARIABLE = "CLIPROXY_PLUGIN_TOKEN"  # its plugin's token, with SOCKET_VARIABLE


class ConnectionClosed(Exception):
    """The host closed the connection (it is shutting the plugin down or has gone)."""


class _Waiting:
    __slots__ = ("answer", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.answer: dict[str, Any] | None = None


class Connection:
    """One connection to the host: lines out under a lock, answers to our requests by id."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, _Waiting] = {}
        self._closed = False

    @classmethod
    def inherited(cls) -> Connection:
        """The socket the host passed to the program it started (CLIPROXY_PLUGIN_FD), or
        a connection to plugins.socket (CLIPROXY_PLUGIN_SOCKET)."""
        fd = os.environ.get(FD_VARIABLE)
        if fd:
            return cls(socket.socket(fileno=int(fd)))
        path = os.environ.get(SOCKET_VARIABLE)
        if not path:
            raise SystemExit(
                f"neither {FD_VARIABLE} nor {SOCKET_VARIABLE} is set: run this plugin from "
                "cliproxy-host (plugins.configs.<id>.command), `cliproxy-host check "
                f"--command`, or with {SOCKET_VARIABLE} and {TOKEN_VARIABLE} set"
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return cls(sock)

    def send(self, message: dict[str, Any]) -> None:
        line = _dumps(message) + b"\n"
        with self._write_lock:
            self.sock.sendall(line)

    def read(self) -> dict[str, Any] | None:
        """The next message, None when the host closed the connection."""
        while True:
            line = self._reader.readline()
            if not line:
                return None
            if line.strip():
                message = _loads(line)
                if isinstance(message, dict):
                    return message

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for its response (read by whoever runs `read`)."""
        waiting = _Waiting()
        with self._lock:
            if self._closed:
                raise ConnectionClosed(f"{method}: the host closed the connection")
            request_id = next(self._ids)
            self._waiting[request_id] = waiting
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        waiting.event.wait()
        if waiting.answer is None:
            raise ConnectionClosed(f"{method}: the host closed the connection")
        return waiting.answer

    def answered(self, message: dict[str, Any]) -> None:
        """A response from the host: wake whoever waits for it."""
        with self._lock:
            waiting = self._waiting.pop(message.get("id"), None)  # type: ignore[arg-type]
        if waiting is not None:
            waiting.answer = message
            waiting.event.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting, self._waiting = list(self._waiting.values()), {}
        for item in waiting:
            item.event.set()
        self.sock.close()
