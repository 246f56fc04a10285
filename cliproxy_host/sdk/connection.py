"""The plugin's end of the connection: reading lines, writing them, and its own requests."""

from __future__ import annotations

import itertools
import json
import os
import select
import socket
import threading
import time
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

from .cpu import spare_cpu

ID_VARIABLE = "CLIPROXY_PLUGIN_ID"
FD_VARIABLE = "CLIPROXY_PLUGIN_FD"  # set by the host for a program it starts
SOCKET_VARIABLE = "CLIPROXY_PLUGIN_SOCKET"  # plugins.socket, for a program started elsewhere
TOKEN_VARIABLE = "CLIPROXY_PLUGIN_TOKEN"  # its plugin's token, with SOCKET_VARIABLE
# Set by the host for a program it starts (its spin-us setting): how long to poll for the
# next call after answering one before sleeping. 0 or unset: no polling.
SPIN_VARIABLE = "CLIPROXY_PLUGIN_SPIN_US"
_RECV_SIZE = 64 * 1024
# After polls that found nothing one after another, the next 0, 1, 3, 7, ... reads (at
# most this many) do not poll: a host calling now and then is not burnt CPU on, and one
# calling in a loop missed now and then is polled for again at once.
_SPIN_RETRY = 32


class ConnectionClosed(Exception):
    """The host closed the connection (it is shutting the plugin down or has gone)."""


def _spin_setting() -> float:
    try:
        return max(0, int(os.environ.get(SPIN_VARIABLE, "0"))) / 1e6
    except ValueError:
        return 0.0


class _Waiting:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = False
        self.answer: dict[str, Any] | None = None


def _no_calls(message: dict[str, Any]) -> None:
    raise RuntimeError(f"a call ({message.get('method')}) read with nobody to run it")


class Connection:
    """One connection to the host: lines out under a lock, answers to our requests by id.

    The read turn (`turn`): whoever holds it reads, and dispatches what it reads. A thread
    waiting for the host's answer to its own request reads it itself while no one else
    reads, so the answer reaches it without a hand-off between threads; a call it reads
    on the way goes to `on_call` (the plugin runs it on another thread).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._chunk = bytearray(_RECV_SIZE)
        self._chunk_view = memoryview(self._chunk)
        self._poller = select.poll()  # polled by the thread holding the turn only
        self._poller.register(sock.fileno(), select.POLLIN)
        self._spin_s = _spin_setting()
        self._missed = 0  # polls that found nothing, in a row
        self._skip = 0  # reads left before polling again
        self.answered_at = float("-inf")  # when this plugin last answered a call
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, _Waiting] = {}
        self._closed = False
        self.eof = False
        self.turn = threading.Lock()
        self.turn_free_since = time.monotonic()
        # Threads in request() wait on this for their answer or a free turn.
        self._cond = threading.Condition()
        self._requesting = 0
        self.on_call: Callable[[dict[str, Any]], None] = _no_calls
        self.on_eof: Callable[[], None] = lambda: None  # the host closed the connection

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
        """The next message, None when the host closed the connection (with the turn)."""
        buf = self._buf
        while True:
            end = buf.find(b"\n")
            if end < 0:
                if self.eof:
                    return None
                if self._spin_s and time.perf_counter() - self.answered_at < self._spin_s:
                    self._spin()
                # Into a buffer kept from call to call: recv(n) would allocate n bytes
                # each time, and a large allocation is an mmap and munmap.
                size = self.sock.recv_into(self._chunk)
                if not size:
                    self.eof = True
                    return None
                buf += self._chunk_view[:size]
                continue
            line = bytes(buf[:end])
            del buf[: end + 1]
            if line.strip():
                message = _loads(line)
                if isinstance(message, dict):
                    return message

    def _spin(self) -> None:
        """Just answered: poll for the next call a little before sleeping in recv, when a
        CPU is spare. A caller calling again at once finds this thread awake: a sleeping
        one must be woken, which costs more than a small call (more in a VM)."""
        if self._skip:
            self._skip -= 1
            return
        if not spare_cpu():
            return
        poll = self._poller.poll
        end = self.answered_at + self._spin_s
        while not poll(0):  # each poll and yield releases the GIL
            if time.perf_counter() >= end:
                self._missed += 1
                self._skip = min(_SPIN_RETRY, (1 << self._missed - 1) - 1)
                return
            os.sched_yield()
        self._missed = 0

    def next_call(self, until: _Waiting | None = None) -> dict[str, Any] | None:
        """With the turn: read until a call comes and answer it, dispatching the host's
        answers and answering pings on the way; None at the end of the connection.

        With `until`, read until that request is answered instead, and give every call
        read meanwhile to `on_call`; so too while other threads wait for answers: the
        reading thread goes on reading for them.
        """
        while until is None or not until.done:
            message = self.read()
            if message is None:
                self._wake_all()
                self.on_eof()
                return None
            method = message.get("method")
            if method is None:
                self.answered(message)
            elif method == "rpc.ping":  # the heartbeat: answered at once, never queued
                self.send({"jsonrpc": "2.0", "id": message.get("id"), "result": {}})
            elif "id" in message:
                if until is None and not self._requesting:
                    return message
                self.on_call(message)
        return None

    def release_turn(self) -> None:
        self.turn_free_since = time.monotonic()
        self.turn.release()
        if self._requesting:  # one of them reads next
            with self._cond:
                self._cond.notify_all()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for its response, reading it on this thread whenever
        no other thread reads."""
        waiting = _Waiting()
        with self._lock:
            if self._closed or self.eof:
                raise ConnectionClosed(f"{method}: the host closed the connection")
            request_id = next(self._ids)
            self._waiting[request_id] = waiting
        with self._cond:
            self._requesting += 1
        try:
            self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            while not waiting.done and not self.eof:
                if self.turn.acquire(blocking=False):
                    try:
                        self.next_call(waiting)
                    finally:
                        self.release_turn()
                    continue
                with self._cond:
                    # Woken by whoever reads our answer or gives up the turn; the timeout
                    # only bounds a wake-up missed.
                    self._cond.wait_for(
                        lambda: waiting.done or self.eof or not self.turn.locked(), 1.0
                    )
        finally:
            with self._cond:
                self._requesting -= 1
        if waiting.answer is None:
            raise ConnectionClosed(f"{method}: the host closed the connection")
        return waiting.answer

    def answered(self, message: dict[str, Any]) -> None:
        """A response from the host: wake whoever waits for it."""
        with self._lock:
            waiting = self._waiting.pop(message.get("id"), None)  # type: ignore[arg-type]
        if waiting is not None:
            waiting.answer = message
            waiting.done = True
            self._wake_all()

    def _wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting, self._waiting = list(self._waiting.values()), {}
        for item in waiting:
            item.done = True
        self._wake_all()
        self.sock.close()
