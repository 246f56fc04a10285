"""The program protocol's messages: newline-delimited JSON-RPC 2.0 lines (docs/PROTOCOL.md).

One JSON object per line, UTF-8, no newline inside (a JSON encoder escapes those in
strings). A line is a request (`method`, an integer `id`), a notification (`method`, no
`id`) or a response (`id` and `result` or `error`). Each side numbers its own requests;
a response answers a request of the side that receives it. Plugin calls carry the ABI's
request envelope as `params` and are answered with the response envelope as `result`;
host callbacks the same way round.
"""

from __future__ import annotations

import math
import os
import select
import socket
import struct
import time
from typing import Any, Final, NamedTuple

import orjson

from ...abi import ABI_VERSION, SCHEMA_VERSION
from ...envelope import ci_get

PROTOCOL: Final = "cliproxy-plugin/1"
HELLO: Final = "rpc.hello"  # plugin -> host, first: its ID, ABI and schema version (and token)
PING: Final = "rpc.ping"  # host -> plugin, the heartbeat: answered {} at once
# JSON-RPC 2.0's own codes, for failures of the protocol rather than of a plugin method.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
# What a line may carry beyond the largest response: the id and the JSON-RPC keys.
LINE_SLACK: Final = 64 * 1024
_RECV_SIZE: Final = 256 * 1024


class ProtocolViolation(Exception):
    """The peer sent a line that is not a message of this protocol; it is disconnected."""


class LineTooLong(ProtocolViolation):
    def __init__(self, limit: int) -> None:
        super().__init__(f"a line longer than {limit} bytes (max_response_bytes plus 64 KiB)")


class Message(NamedTuple):
    """One line, classified: a request or notification (`method` set) or a response."""

    id: int | None
    method: str | None = None
    params: Any = None
    result: Any = None
    error: dict[str, Any] | None = None


def parse(line: bytes) -> Message:
    """The message on one line; ProtocolViolation for anything else."""
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolViolation(f"a line that is not JSON ({exc})") from None
    if type(body) is not dict:
        raise ProtocolViolation(f"a JSON {type(body).__name__} where an object belongs")
    request_id = body.get("id")
    if request_id is not None and type(request_id) is not int:  # bool is not int here
        raise ProtocolViolation(f"an id that is not an integer: {request_id!r}")
    method = body.get("method")
    if method is not None:
        if type(method) is not str:
            raise ProtocolViolation(f"a method that is not a string: {method!r}")
        return Message(request_id, method, body.get("params"))
    if request_id is None:
        raise ProtocolViolation("a message with neither a method nor an id")
    error = body.get("error")
    if error is not None:
        if type(error) is not dict:
            raise ProtocolViolation("an error that is not an object")
        return Message(request_id, None, None, None, error)
    if "result" not in body:
        raise ProtocolViolation(f"response {request_id} has neither result nor error")
    return Message(request_id, None, None, body["result"])


def request(request_id: int, method: str, params: bytes) -> bytes:
    """A request line; `params` is JSON already (an envelope as the host holds it)."""
    if b"\n" in params:  # pretty-printed JSON: one line is the framing
        params = orjson.dumps(orjson.loads(params))
    return b'{"jsonrpc":"2.0","id":%d,"method":%s,"params":%s}\n' % (
        request_id,
        orjson.dumps(method),
        params,
    )


def result(request_id: int, body: bytes) -> bytes:
    """A response line carrying `body` (JSON already) as its result."""
    if b"\n" in body:
        body = orjson.dumps(orjson.loads(body))
    return b'{"jsonrpc":"2.0","id":%d,"result":%s}\n' % (request_id, body)


def error(request_id: int | None, code: int, message: str) -> bytes:
    """A JSON-RPC error response line (protocol failures: unknown method, bad hello)."""
    return (
        orjson.dumps(
            {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
        )
        + b"\n"
    )


def hello_answer(plugin_id: str) -> bytes:
    """What the host answers a good rpc.hello with."""
    return orjson.dumps(
        {
            "protocol": PROTOCOL,
            "abi_version": ABI_VERSION,
            "schema_version": SCHEMA_VERSION,
            "plugin_id": plugin_id,
        }
    )


def hello_problem(params: Any, plugin_id: str, token: str | None) -> str | None:
    """Why an rpc.hello is refused (naming what to fix), or None when it is good."""
    if not isinstance(params, dict):
        return "rpc.hello params must be an object with plugin_id, abi_version, schema_version"
    claimed = ci_get(params, "plugin_id")
    if claimed != plugin_id:
        return (
            f"the program said it is plugin {claimed!r} but was started as {plugin_id!r}; "
            "take the ID from CLIPROXY_PLUGIN_ID instead of hard-coding it"
        )
    abi = ci_get(params, "abi_version")
    if abi != ABI_VERSION:
        return f"ABI version {abi!r} is not supported: this host speaks ABI version {ABI_VERSION}"
    schema = ci_get(params, "schema_version")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA_VERSION:
        return (
            f"schema version {schema!r} is not supported: this host speaks schema versions "
            f"up to {SCHEMA_VERSION}"
        )
    if token is not None and ci_get(params, "token") != token:
        return "wrong or missing token: give the token configured for this plugin ID"
    return None


class Lines:
    """The lines coming in on a socket: a buffer, filled by whoever holds the read turn.

    Not a file object, so that any thread may read (a caller waiting for its own answer
    reads it itself when no one else is reading: no hand-off between threads), and so
    that bytes read past one line (a listener reading a hello) stay with the socket.
    """

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.limit = limit
        self.eof = False
        self._buf = bytearray()
        self._chunk = bytearray(_RECV_SIZE)
        self._chunk_view = memoryview(self._chunk)
        self._fd = sock.fileno()
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)

    def next_line(self) -> bytes | None:
        """A whole line from the buffer (without its newline), or None; LineTooLong."""
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > self.limit:
                raise LineTooLong(self.limit)
            return None
        if end > self.limit:
            raise LineTooLong(self.limit)
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line

    def readable(self, timeout: float | None) -> bool:
        """Whether the socket has bytes (or its end) within `timeout` seconds; for the
        thread holding the read turn (one poll object, polled by one thread at a time)."""
        ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
        return bool(self._poller.poll(ms))

    def readable_apart(self, timeout: float | None) -> bool:
        """`readable` for a thread without the read turn (a poll object of its own)."""
        ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
        poll = select.poll()
        poll.register(self._fd, select.POLLIN)
        return bool(poll.poll(ms))

    def spin(self, seconds: float) -> bool:
        """Poll without sleeping for up to `seconds` (with the read turn): whether bytes came.

        A thread asleep in poll() must be woken by the kernel when the answer comes, and
        a cross-CPU wake-up costs more than a small call itself (more in a VM). Yielding
        between polls leaves the CPU to anything that needs it, and each poll releases
        the GIL.
        """
        poll = self._poller.poll
        end = time.perf_counter() + seconds
        while not poll(0):
            if time.perf_counter() >= end:
                return False
            os.sched_yield()
        return True

    def fill_within(self, deadline: float | None) -> bool | None:
        """Wait in recv for bytes until `deadline` (the thread holding the read turn):
        True when some came, False at the socket's end, None when the deadline passed.

        One system call where poll() and recv() would be two: the socket's kernel receive
        timeout (set_receive_step) ends the wait every step to look at the deadline.
        """
        while True:
            try:
                return self.fill()
            except BlockingIOError:  # the receive timeout's step: look at the deadline
                if deadline is not None and time.monotonic() >= deadline:
                    return None

    def fill(self) -> bool:
        """Read what the socket has (call when readable); False at its end."""
        # Into a buffer kept from read to read: recv(n) allocates n bytes each time, and
        # an allocation that large is an mmap and a munmap per read.
        size = self.sock.recv_into(self._chunk)
        if not size:
            self.eof = True
            return False
        self._buf += self._chunk_view[:size]
        return True

    def read_line(self, timeout: float) -> bytes | None:
        """The next line within `timeout` (TimeoutError), None at the end."""
        deadline = time.monotonic() + timeout
        while (line := self.next_line()) is None:
            if self.eof:
                return None
            if not self.readable(deadline - time.monotonic()):
                raise TimeoutError
            self.fill()
        return line


def set_send_timeout(sock: socket.socket, seconds: float) -> None:
    """Bound every send: a peer that stops reading must not block a host thread forever."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(seconds))


def set_receive_step(sock: socket.socket, seconds: float) -> None:
    """End a blocking recv() after `seconds` without bytes (BlockingIOError), so that a
    thread waiting in it looks at its deadline that often (Lines.fill_within)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1e6))
