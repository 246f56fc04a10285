"""The isolated-mode wire: frames, the control channel, call lines, and what both ends share.

Sockets: a **control socket** (a socketpair) carries the handshake, pings, shutdown and
the plugin's host calls from threads it started, multiplexed, with a reader thread on
each side. **Call lines** carry the calls: a line is a socketpair of its own, created on
demand, whose worker end is passed over a third socket (SCM_RIGHTS); it carries one call
at a time, and the plugin's host calls made while running it. A caller checks out an
idle line, sends its CALL and reads the answer itself, and the worker runs each line's
calls on that line's thread, so no thread hands a call or an answer to another. Where
the worker's native core serves the lines, each line also has a **ring** (linecore.c,
host_core.py): the same frames in shared memory, the socket only for large ones. Both
ends poll briefly before sleeping, yielding the CPU between polls.

Frames: a 13-byte header (payload length: u32, kind: u8, request id: u64, big-endian)
and the payload. CALL and HOST_CALL payloads are a u16 method length, the UTF-8 method
and the request envelope bytes as they are; RESULT and HOST_RESULT payloads are response
envelope bytes as they are; ERROR payloads are a small JSON object describing a
PluginError. Host and worker each number their own requests (CALL, PING and SHUTDOWN
from the host, HOST_CALL from the worker).

A call's timeout (handed down by the guard) is kept by the kernel on the socket
(SO_RCVTIMEO/SO_SNDTIMEO on its line) and by the futex wait on a ring: a sleeping caller
costs no timer thread and no poll() per call.
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import select
import socket
import struct
import threading
import time
from typing import Any, Final, cast

import orjson

from ...abi import ffi
from ...errors import PluginError
from . import host_core
from .host_core import HostCore

HEADER: Final = struct.Struct(">IBQ")
_METHOD_LEN: Final = struct.Struct(">H")
# Below this a frame is joined and sent with one syscall; above it the parts are sent as
# they are, so a large payload is never copied just to prepend a header.
_JOIN_LIMIT: Final = 64 * 1024
_READ_BUFFER: Final = 256 * 1024
LINE_BUFFER: Final = 64 * 1024
_TIMEVAL: Final = struct.Struct("@ll")  # struct timeval, for SO_RCVTIMEO and SO_SNDTIMEO
HANDSHAKE_ID: Final = 0  # READY or the load ERROR answer this id
# One byte, before any frame: what a standby worker (spawn.py) waits for to load its plugin.
GO: Final = b"G"
# How much longer than what is left of a call a line's kernel timeout may be left set.
_TIMEOUT_SLACK: Final = 0.01
# What two wake-ups across CPUs (send, then answer) may add to a quick exchange on a slow
# virtual machine. A worker polls for the next call while calls come within its spin time
# plus this of its last answer; judged by the spin time alone, one exchange with a
# sleeping peer would make it sleep for good.
WAKE_UP_ALLOWANCE_S: Final = 200e-6
# A caller polls for the answer of a method a little slower than the spin time for up to
# this much longer (client.py): less than the two wake-ups a sleeping caller would pay.
SPIN_STRETCH_S: Final = 150e-6
# How long an answered caller waits, polling, for another caller's Python between two
# exchanges to let the interpreter lock go, rather than sleep on the lock with its CPU
# idle (linecore.c, wait_for_python). Two callers' Python between exchanges takes 10-30 us
# here, and more in a slow machine's spells: 50 us gained little, 200 us as much as 1 ms
# (bench/HISTORY.md, session 12). Only with spin-us above 0.
GIL_HOLD_S: Final = 200e-6


class Kind(enum.IntEnum):
    READY = 1  # worker -> host: the plugin is loaded; payload {"pid": N, "rings": bool}
    CALL = 2  # host -> worker, on a call line: call a plugin method
    RESULT = 3  # worker -> host, on the call's line: the plugin's response envelope
    ERROR = 4  # worker -> host: the call (on its line) or the load (id 0) raised a PluginError
    HOST_CALL = 5  # worker -> host: the plugin called host->call
    HOST_RESULT = 6  # host -> worker: the host's answer envelope
    PING = 7  # host -> worker: answered on the worker's reader thread, never queued
    PONG = 8  # worker -> host
    SHUTDOWN = 9  # host -> worker: close the plugin and exit; payload: drain seconds
    # worker -> host: a plugin thread's line for its host calls, whose socket and ring (a
    # sealed memfd) were passed on the lines socket just before; no payload
    THREAD_LINE = 10


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a frame of {size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


_METHOD_HEADS: dict[str, bytes] = {}
METHOD_CACHE_MAX: Final = 256  # plugins have a handful of methods; callers may invent more


def pack_call(method: str, request: bytes) -> tuple[bytes, bytes]:
    """The parts of a CALL or HOST_CALL payload: the method's length and name, the request."""
    head = _METHOD_HEADS.get(method)
    if head is None:
        name = method.encode("utf-8")
        head = _METHOD_LEN.pack(len(name)) + name
        if len(_METHOD_HEADS) < METHOD_CACHE_MAX:
            _METHOD_HEADS[method] = head
    return head, request


def unpack_call(payload: bytes) -> tuple[str, bytes]:
    if len(payload) < _METHOD_LEN.size:
        raise ProtocolError("call frame without a method")
    (size,) = _METHOD_LEN.unpack_from(payload)
    end = _METHOD_LEN.size + size
    if len(payload) < end:
        raise ProtocolError("call frame shorter than its method name")
    return payload[_METHOD_LEN.size : end].decode("utf-8", "replace"), payload[end:]


def pack_error(exc: PluginError) -> bytes:
    return orjson.dumps(
        {
            "type": type(exc).__name__,
            "code": exc.code,
            "message": exc.message,
            "retryable": exc.explicit_retryable,
            "http_status": exc.explicit_http_status,
        }
    )


def unpack_error(payload: bytes, *, plugin_id: str, method: str | None) -> PluginError:
    """The PluginError the worker raised, rebuilt with the same class and fields."""
    try:
        body = orjson.loads(payload)
        cls = PluginError.class_named(str(body.get("type"))) or PluginError
        retryable = body.get("retryable")
        http_status = body.get("http_status")
        return cls(
            str(body["message"]),
            code=str(body["code"]),
            plugin_id=plugin_id,
            method=method,
            retryable=retryable if isinstance(retryable, bool) else None,
            http_status=http_status if isinstance(http_status, int) else None,
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError) as exc:
        raise ProtocolError(f"unreadable error frame: {exc}") from None


def send_frame(sock: socket.socket, kind: Kind, request_id: int, parts: tuple[bytes, ...]) -> None:
    """Write one frame; OSError when the peer is gone. Callers keep frames from interleaving."""
    size = sum(map(len, parts))
    header = HEADER.pack(size, kind, request_id)
    if size <= _JOIN_LIMIT:
        sock.sendall(b"".join((header, *parts)))
    else:
        sock.sendall(header)
        for part in parts:
            sock.sendall(part)


def read_frame(file: io.BufferedReader, max_frame: int | None) -> tuple[Kind, int, bytes] | None:
    """The next frame from a buffered reader, or None at EOF (a frame cut short counts too)."""
    header = file.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    size, kind, request_id = HEADER.unpack(header)
    # Checked before reading: a broken peer must not make us allocate its length.
    if max_frame is not None and size > max_frame:
        raise FrameTooLarge(size, max_frame)
    payload = file.read(size) if size else b""
    if len(payload) < size:
        return None
    try:
        return Kind(kind), request_id, payload
    except ValueError:
        raise ProtocolError(f"unknown frame kind {kind}") from None


class Channel:
    """One end of the control socket: a locked writer (frames never interleave) and a reader.

    recv() belongs to a single reader thread; send() may be called from any thread.
    """

    def __init__(
        self, sock: socket.socket, max_frame: int | None = None, buffering: int = _READ_BUFFER
    ) -> None:
        self.sock = sock
        self._max_frame = max_frame
        self._file = cast(io.BufferedReader, sock.makefile("rb", buffering=buffering))
        self._write_lock = threading.Lock()

    def send(self, kind: Kind, request_id: int, *parts: bytes) -> None:
        """Send one frame; OSError when the peer is gone."""
        with self._write_lock:
            send_frame(self.sock, kind, request_id, parts)

    def recv(self) -> tuple[Kind, int, bytes] | None:
        """The next frame, or None at EOF (a frame cut short counts as EOF)."""
        return read_frame(self._file, self._max_frame)

    def close(self) -> None:
        # Under the write lock: a sender between reading the fd number and its syscall
        # could otherwise write into whatever socket reuses the number next.
        with self._write_lock:
            self._file.close()
            self.sock.close()


class Latch:
    """A one-shot event, set exactly once, waited for by one thread.

    A bare lock: on the path of every call it costs a fraction of a threading.Event.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        if self._lock.acquire(timeout=-1 if timeout is None else timeout):
            self._lock.release()  # stays set for any later wait
            return True
        return False


def spin_until_readable(poller: select.poll, seconds: float) -> bool:
    """Poll without sleeping for up to `seconds`: whether the socket became readable.

    A thread that sleeps in recv() must be woken by the sender, and a cross-CPU wake-up
    costs more than a small call itself (more still in a virtual machine). An answer
    expected within microseconds is cheaper to watch for.
    """
    end = time.perf_counter() + seconds
    poll = poller.poll
    yield_cpu = os.sched_yield
    while not poll(0):
        if time.perf_counter() >= end:
            return False
        # The kernel often wakes the other end on this very CPU: a spin that kept the CPU
        # would only delay the answer it waits for.
        yield_cpu()
    return True


def set_socket_timeouts(sock: socket.socket, seconds: float | None) -> None:
    """Kernel-side send and receive timeouts (0: none) on a blocking socket.

    Unlike socket.settimeout(), they cost no poll() before every send and recv.
    """
    whole = 0.0 if seconds is None else max(seconds, 1e-6)
    value = _TIMEVAL.pack(int(whole), int(whole % 1 * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


class NotSent(OSError):
    """A frame could not be sent: the worker is gone (it never read the frame)."""


# Kind by number, without the enum's lookup on the path of every call; None: unknown.
_KINDS: Final = tuple(Kind._value2member_map_.get(n) for n in range(256))


class CallLine:
    """A call line: a socket pair of its own to the worker, carrying one call at a time.

    Checked out by one caller, who sends the CALL and reads the answer on its own thread:
    no reader thread hands the answer over, so a call costs at most the two wake-ups of
    a socket round trip, and none when the answer comes within the spin time.
    The worker serves each line on a thread of its own, and sends one frame at a time
    (a RESULT or ERROR, or a HOST_CALL it waits on): an exchange (send one frame, read the
    next) never reads past a frame. With the native core (host_core.py) an exchange is
    one C call; without it, the same in Python.

    After any exception the line is in an unknown state: close it.
    """

    __slots__ = (
        "_buf",
        "_cbuf",
        "_closing",
        "_core",
        "_err",
        "_exchange",
        "_fd",
        "_got",
        "_max_frame",
        "_poller",
        "_ring",
        "_timeout",
        "_took",
        "_view",
        "hold_s",
        "idle_since",
        "sock",
    )

    def __init__(
        self,
        sock: socket.socket,
        max_frame: int,
        timeout: float | None,
        core: HostCore | None = None,
        ring: Any = None,
        *,
        hold_s: float = 0.0,
    ) -> None:
        """`core`: exchange in C; `ring`: the line's ring (host_core.py), whose mapping
        the line owns from now on; `hold_s`: how long an answered exchange waits for
        another caller's Python to let the interpreter lock go (GIL_HOLD_S, or 0)."""
        self.sock = sock
        self.hold_s = hold_s
        self._fd = sock.fileno()
        self._max_frame = max_frame
        # One frame's first LINE_BUFFER bytes land here; a larger frame's rest is read apart.
        self._buf = bytearray(LINE_BUFFER)
        self._view = memoryview(self._buf)
        self._core = core
        self._ring = ffi.NULL if ring is None else ring
        self._closing: threading.Lock | None = None
        self._exchange = None if core is None else core.exchange
        if core is not None:
            self._cbuf = ffi.from_buffer(self._buf)
            self._got = ffi.new("long*")
            self._err = ffi.new("int*")
            self._took = ffi.new("double*", -1.0)
            self._closing = threading.Lock()
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self._timeout = timeout  # what the kernel timeouts are set to
        self.idle_since = 0.0
        set_socket_timeouts(sock, timeout)

    def call(
        self, request_id: int, method: str, request: bytes, remaining: float | None, spin_s: float
    ) -> tuple[Kind, int, bytes] | None:
        """Send a CALL that may take `remaining` seconds (None: no limit) and read the
        worker's first frame (its answer, or a HOST_CALL of the plugin's).

        None at EOF; TimeoutError when the time ran out (sending or waiting); NotSent when
        the worker was gone before it took the frame; ProtocolError, OSError.
        """
        self._arm(remaining)
        head, body = pack_call(method, request if type(request) is bytes else bytes(request))
        return self._send_recv(Kind.CALL, request_id, head, body, spin_s, remaining)

    def answer(
        self, request_id: int, answer: bytes, remaining: float | None, spin_s: float
    ) -> tuple[Kind, int, bytes] | None:
        """Answer a HOST_CALL the worker sent on this line while running its call, and read
        its next frame, as call() does.

        The time the host took to answer counts against the call's timeout: what is
        left of it bounds the rest of the call.
        """
        if remaining is not None and remaining <= 0:
            raise TimeoutError
        self._arm(remaining)
        return self._send_recv(Kind.HOST_RESULT, request_id, answer, b"", spin_s, remaining)

    def _arm(self, remaining: float | None) -> None:
        current = self._timeout
        if remaining is None:
            if current is not None:
                set_socket_timeouts(self.sock, None)
                self._timeout = None
        elif current is None or not remaining <= current <= remaining + _TIMEOUT_SLACK:
            # Reset only when what is set is shorter, or longer by more than the slack:
            # calls with the same timeout then cost no setsockopt.
            set_socket_timeouts(self.sock, remaining)
            self._timeout = remaining

    def _send_recv(  # noqa: PLR0917 - the path of every call, kept flat
        self,
        kind: Kind,
        request_id: int,
        head: bytes,
        body: bytes,
        spin_s: float,
        remaining: float | None,
    ) -> tuple[Kind, int, bytes] | None:
        exchange = self._exchange
        if exchange is None:
            try:
                send_frame(self.sock, kind, request_id, (head, body))
            except BlockingIOError:  # SO_SNDTIMEO ran out
                raise TimeoutError from None
            except OSError as exc:
                raise NotSent(exc.errno, exc.strerror) from None
            return self.recv(spin_s)
        got = self._got
        code = exchange(
            self._ring,
            self._fd,
            kind,
            request_id,
            head,
            len(head),
            body,
            len(body),
            spin_s,
            -1.0 if remaining is None else remaining,
            self._cbuf,
            LINE_BUFFER,
            got,
            self._err,
            self._took,
            self.hold_s,
        )
        if code == host_core.OK:
            return self._frame(got[0])
        return self._failed(code)

    def serve(
        self, request_id: int | None, answer: bytes, spin_s: float
    ) -> tuple[Kind, int, bytes] | None:
        """The host's end of a thread line (the worker opens one for a plugin thread's host
        calls): answer the call `request_id` (None: none yet), then wait as long as it
        takes for the thread's next frame; None once the line is closed (the thread
        ended, or the worker died and the host aborted the line). OSError, ProtocolError.
        Only on a line with a ring."""
        core = cast(HostCore, self._core)
        code = core.thread_line_serve(
            self._ring,
            self._fd,
            -1 if request_id is None else Kind.HOST_RESULT,
            0 if request_id is None else request_id,
            answer,
            len(answer),
            spin_s,
            self._cbuf,
            LINE_BUFFER,
            self._got,
            self._err,
        )
        if code == host_core.OK:
            return self._frame(self._got[0])
        return self._failed(code)

    def _failed(self, code: int) -> tuple[Kind, int, bytes] | None:
        """What an exchange that did not answer OK means: None at EOF, else raised."""
        if code in (host_core.SEND_TIMEOUT, host_core.RECV_TIMEOUT):
            raise TimeoutError
        if code == host_core.EOF:
            return None  # a frame cut short counts as EOF
        if code == host_core.PROTOCOL:
            raise ProtocolError("a broken frame in the call line's shared memory")
        errno = self._err[0]
        if code == host_core.SEND_FAILED:
            raise NotSent(errno, os.strerror(errno))
        raise OSError(errno, os.strerror(errno))

    def plugin_took(self) -> float | None:
        """How long the plugin took for the call this line was last answered (seconds, by
        the worker's clock: no wake-ups in it); None where the worker does not say (no
        ring). Meaningful only right after a RESULT or ERROR frame."""
        if self._ring == ffi.NULL:
            return None
        took: float = self._took[0]
        return took if took >= 0 else None

    def recv(self, spin_s: float) -> tuple[Kind, int, bytes] | None:
        """The worker's next frame; None at EOF; TimeoutError when nothing came in time.

        Polls for up to spin_s first (see spin_until_readable), then sleeps in recv().
        """
        if spin_s:
            spin_until_readable(self._poller, spin_s)
        view, recv_into = self._view, self.sock.recv_into
        have, want = 0, HEADER.size
        while have < want:
            try:
                got = recv_into(view[have:])
            except BlockingIOError:  # SO_RCVTIMEO ran out, with a frame or without
                raise TimeoutError from None
            if not got:
                return None  # EOF, a frame cut short counting as one
            have += got
            if want == HEADER.size and have >= HEADER.size:
                want = min(HEADER.size + HEADER.unpack_from(view)[0], LINE_BUFFER)
        return self._frame(have)

    def _frame(self, have: int) -> tuple[Kind, int, bytes] | None:
        """The frame whose first `have` bytes are in the buffer; the rest read from the line."""
        size, number, request_id = HEADER.unpack_from(self._buf)
        if size > self._max_frame:
            raise FrameTooLarge(size, self._max_frame)
        kind = _KINDS[number]
        if kind is None:
            raise ProtocolError(f"unknown frame kind {number}")
        end = HEADER.size + size
        if have == end:
            return kind, request_id, self._view[HEADER.size : end].tobytes()
        if have > end:
            raise ProtocolError(f"{have - end} bytes after a frame, which nothing asked for")
        payload = self._rest(have, size)
        return None if payload is None else (kind, request_id, payload)

    def _rest(self, have: int, size: int) -> bytes | None:
        """A frame larger than the buffer: its payload, the rest read straight into it."""
        payload = bytearray(size)
        done = have - HEADER.size
        payload[:done] = self._view[HEADER.size : have]
        view, recv_into = memoryview(payload), self.sock.recv_into
        while done < size:
            try:
                got = recv_into(view[done:])
            except BlockingIOError:
                raise TimeoutError from None
            if not got:
                return None
            done += got
        return bytes(payload)

    def abort(self) -> None:
        """Wake whoever waits on the line (it then reads EOF); from any thread."""
        closing = self._closing
        if closing is None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            return
        with closing:
            if self._ring != ffi.NULL:
                cast(HostCore, self._core).ring_abort(self._ring)
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the line: the worker's thread serving it ends."""
        closing = self._closing
        if closing is not None:
            with closing:  # abort() from another thread must not touch an unmapped ring
                ring, self._ring = self._ring, ffi.NULL
                if ring != ffi.NULL:
                    core = cast(HostCore, self._core)
                    core.ring_abort(ring)
                    core.ring_unmap(ring)
        self.sock.close()
