"""One worker process: its sockets and call lines, its requests in flight, its reader, its death."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol, TypeVar, cast

import orjson

from ...errors import PluginCrashed, PluginError, PluginLoadError, PluginUnloading
from ...sdk.cpu import spare_cpu
from .host_core import HostCore, host_core
from .limits import IsolationLimits
from .spawn import Spawned, forward_output, spawn
from .wire import (
    GIL_HOLD_S,
    GO,
    HANDSHAKE_ID,
    CallLine,
    Channel,
    FrameTooLarge,
    Kind,
    Latch,
    ProtocolError,
    unpack_call,
    unpack_error,
)

log = logging.getLogger(__name__)

# A worker whose socket closed but which still runs is killed after this long.
REAP_GRACE: Final = 2.0
# After the drain: time for plugin.shutdown and shutdown() before the worker is killed.
EXIT_GRACE: Final = 2.0
# What a frame from the worker may carry beyond a response: error JSON, a method name.
_FRAME_SLACK: Final = 64 * 1024
PING: Final = "(ping)"  # the method name a ping is registered under
# How long the control reader waits for a thread line's socket and ring, which the worker
# passes on the lines socket before it announces the line on the control socket.
THREAD_LINE_WAIT_S: Final = 1.0
# The most thread lines a worker opens (THREAD_LINES_MAX in linecore.c). The host takes
# twice as many: a line the worker closed as its thread ended is counted here until the
# host's thread serving it has seen so, and a new thread's line must not be refused then.
THREAD_LINES_MAX: Final = 16
_THREAD_LINES_TAKEN: Final = 2 * THREAD_LINES_MAX
_CMSG_CLOEXEC: Final[int] = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


class Pending:
    """One request waiting for its answer frame; resolved or failed by whoever took it."""

    __slots__ = ("data", "error", "event", "line", "method")

    def __init__(self, method: str | None) -> None:
        self.method = method  # None for the handshake
        self.event = Latch()
        self.data = b""
        self.error: PluginError | None = None
        self.line: CallLine | None = None  # the line a call waits on

    def resolve(self, data: bytes) -> None:
        self.data = data
        self.event.set()

    def fail(self, error: PluginError) -> None:
        self.error = error
        self.event.set()


P = TypeVar("P", bound=Pending)


class WorkerGone(Exception):
    """The request never reached the worker (it was already gone): safe to send again."""


class Owner(Protocol):
    """What a worker process reports to whoever supervises it (from its reader thread)."""

    def replace(self, worker: WorkerProcess, reason: str) -> None:
        """Kill a worker that failed; it is being replaced from this moment on."""
        ...

    @property
    def host_call(self) -> Callable[[WorkerProcess, int, str, bytes], None]:
        """Answers a host call the plugin made from a thread of its own (not on the
        reader's thread, which must go on reading)."""
        ...

    @property
    def answer_host(self) -> Callable[[str, bytes], bytes]:
        """The answer envelope to a host call, on the calling thread (a thread line's)."""
        ...

    def worker_died(self, worker: WorkerProcess, failure: str | None, signame: str | None) -> None:
        """The worker is gone; `failure` says why when its death counts against the plugin."""
        ...


def frame_fault(exc: ProtocolError, max_response_bytes: int) -> str:
    """Why a worker whose frames broke is killed, for its log and health."""
    if isinstance(exc, FrameTooLarge):
        return (
            f"the worker sent {exc}, which max_response_bytes ({max_response_bytes}) "
            "does not allow; it was killed"
        )
    return f"the worker broke the frame protocol ({exc}); it was killed"


class RequestTable:
    """Requests in flight by ID, of a worker process or a program's connection: registered
    under its lock, and refused once it is dead or being killed (then its reader has
    failed, or fails, whatever is pending)."""

    lock: threading.Lock
    ids: itertools.count[int]
    pending: dict[int, Pending]
    dead: bool
    kill_reason: str | None

    def add(self, pending: P) -> tuple[int, P] | None:
        """`pending` under a new request ID, or None when the other end is gone."""
        with self.lock:
            if self.dead or self.kill_reason is not None:
                return None
            request_id = next(self.ids)
            self.pending[request_id] = pending
        return request_id, pending

    def take(self, request_id: int) -> Pending | None:
        """The request, no longer pending (None: answered or failed already)."""
        with self.lock:
            return self.pending.pop(request_id, None)


def unloaded_while(plugin_id: str, method: str | None) -> PluginUnloading:
    """What a call in flight gets when its plugin was unloaded under it."""
    return PluginUnloading(
        f"the plugin was unloaded while {method} was running; retry once it has been reloaded",
        plugin_id=plugin_id,
        method=method,
        retryable=True,
    )


def died_where(pending: list[Pending]) -> str:
    """Where the other end died, by the calls it was running: "in echo, spin" or "while idle"."""
    methods = sorted({p.method for p in pending if p.method and p.method != PING})
    return f"in {', '.join(methods)}" if methods else "while idle"


class WorkerProcess(RequestTable):
    """One worker process: its socket, its requests in flight, the threads reading it."""

    def __init__(
        self,
        plugin_id: str,
        path: Path,
        limits: IsolationLimits,
        ids: itertools.count[int],
        owner: Owner,
        *,
        standby: Spawned | None = None,
    ) -> None:
        """Start a worker, or wake `standby` (a worker spawned ahead for this plugin)."""
        self.plugin_id = plugin_id
        self.path = path
        self.owner = owner
        self.lock = threading.Lock()
        self.handshake = Pending(None)
        self.pending: dict[int, Pending] = {HANDSHAKE_ID: self.handshake}
        self.ids = ids
        self.dead = False  # set first when the socket is gone; no request is sent after it
        self.ready = False  # the plugin is loaded (READY received)
        self.stopping = False  # the host asked it to exit: its death is expected
        self.kill_reason: str | None = None
        self.max_response = limits.max_response_bytes
        self.max_frame = limits.max_response_bytes + _FRAME_SLACK
        self.idle_lines: list[CallLine] = []  # a stack: the line used last is used next
        # The plugin's threads' own lines for their host calls, each served by a thread.
        self.thread_lines: set[CallLine] = set()
        # Lines exchange in C where the worker's native core is in use (and so is built),
        # over rings once the worker says (READY) that the core serves its lines.
        self.core = host_core() if limits.native_core else None
        self.rings = False

        if standby is None:
            self.proc, parent_sock, self.lines_sock, output = spawn(plugin_id, path, limits)
        else:
            self.proc, parent_sock, self.lines_sock, output = standby
            # OSError (it died while it waited): the caller discards it and spawns anew.
            parent_sock.sendall(GO)
        self.pid = self.proc.pid
        self.spin_s = limits.spin_us / 1e6
        # Read only for thread lines, which were passed before they were announced: a
        # worker that announces one without passing it is not waited for long.
        self.lines_sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(THREAD_LINE_WAIT_S)
        )
        self.channel = Channel(parent_sock, self.max_frame)
        name = f"cliproxy-isolated-{plugin_id}-{self.pid}"
        self.reader = threading.Thread(target=self._read, name=name, daemon=True)
        self.output = threading.Thread(
            target=forward_output,
            args=(output, plugin_id),
            name=f"{name}-stderr",
            daemon=True,
        )
        self.exit_watch = threading.Thread(
            target=self._watch_exit, name=f"{name}-exit", daemon=True
        )
        self.output.start()
        self.reader.start()
        self.exit_watch.start()

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        return (self.reader, self.output, self.exit_watch)

    def _watch_exit(self) -> None:
        """When the worker exits: end what it left running, and make it an EOF for its reader.

        A process the plugin started stays in the worker's process group (the worker
        leads a session of its own), and goes with it. One forked without exec also
        keeps the worker's end of every socket open, and the reader would wait for an
        EOF forever.
        """
        if hasattr(os, "waitid"):
            # Exited but not reaped yet: its pid, the group's ID, cannot be reused.
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()
        with contextlib.suppress(OSError):  # closed already: the reader saw the EOF
            self.channel.sock.shutdown(socket.SHUT_RDWR)

    # -- its life: loaded, pinged, shut down -------------------------------------------

    def wait_loaded(self, timeout_s: float) -> None:
        """Wait for READY; raise the load error, killing a worker that takes too long."""
        handshake = self.handshake
        if not handshake.event.wait(timeout_s):
            self.kill(
                f"it did not load the plugin within {timeout_s:g} s (start_timeout_s), "
                "so it was killed"
            )
            handshake.event.wait()
        if handshake.error is not None:
            # The worker is gone or exits by itself after a load error: reap it first.
            self.join(REAP_GRACE + 1.0)
            err = handshake.error
            if isinstance(err, PluginLoadError):
                raise err
            raise PluginLoadError(err.message, code=err.code, plugin_id=self.plugin_id)

    def ping(self, timeout_s: float) -> bool:
        """False if the worker missed the ping; True if it answered, or died (its reader
        handles that)."""
        registered = self.add(Pending(PING))
        if registered is None:
            return True
        request_id, pending = registered
        try:
            self.channel.send(Kind.PING, request_id)
        except OSError:
            return True
        return pending.event.wait(timeout_s) or self.take(request_id) is None

    def shut_down(self, drain: float) -> None:
        """Ask the worker to close the plugin (calls get `drain` seconds) and exit; kill it
        if it has not exited shortly after."""
        self.stopping = True
        wait = 0.0
        if self.ready:
            with contextlib.suppress(OSError):
                self.channel.send(Kind.SHUTDOWN, 0, f"{drain:.3f}".encode())
            wait = drain + EXIT_GRACE
        self.reader.join(wait)
        if self.reader.is_alive():
            self.kill(f"the worker did not exit within {wait:g} s of shutdown; killed")

    # -- requests and call lines ------------------------------------------------------

    def start_call(
        self, method: str, timeout: float | None
    ) -> tuple[int, Pending, CallLine] | None:
        """A call's request ID, its pending answer and the call line it goes on (an idle
        one, or a new one; also `pending.line`); None when the worker is gone."""
        pending = Pending(method)
        with self.lock:  # once per call: registered and given a line under one lock
            if self.dead or self.kill_reason is not None:
                return None
            request_id = next(self.ids)
            self.pending[request_id] = pending
            line = self.idle_lines.pop() if self.idle_lines else None
        if line is None:
            line = self._new_line(timeout)
            if line is None:
                self.take(request_id)
                return None
        pending.line = line
        return request_id, pending, line

    def finish_call(self, request_id: int, line: CallLine) -> None:
        """A call answered in full: no longer pending, and its line ready for the next."""
        line.idle_since = time.monotonic()
        with self.lock:
            self.pending.pop(request_id, None)
            if not self.dead:
                self.idle_lines.append(line)
                return
        line.close()

    def _new_line(self, timeout: float | None) -> CallLine | None:
        """A new call line (its worker end passed to the worker); None when it is gone."""
        ours, theirs = socket.socketpair()
        ring, ring_fd = None, -1
        core = self.core
        try:
            with theirs:
                if self.rings and core is not None:
                    ring, ring_fd = core.new_ring()
                    fds = [theirs.fileno(), ring_fd]
                else:
                    fds = [theirs.fileno()]
                socket.send_fds(self.lines_sock, [b"L"], fds)
        except OSError:
            if ring is not None:
                cast(HostCore, core).ring_unmap(ring)
            ours.close()
            return None
        finally:
            if ring_fd >= 0:
                os.close(ring_fd)  # passed: the worker holds its own
        try:
            hold_s = GIL_HOLD_S if self.spin_s > 0 else 0.0
            return CallLine(ours, self.max_frame, timeout, core, ring, hold_s=hold_s)
        except OSError:
            ours.close()
            raise

    def trim_lines(self, idle_s: float) -> None:
        """Close lines nobody used for idle_s (their worker threads exit); keep the last one."""
        cutoff = time.monotonic() - idle_s
        with self.lock:
            # Oldest first: lines are checked in on top of the stack.
            stale = 0
            while stale < len(self.idle_lines) - 1 and self.idle_lines[stale].idle_since < cutoff:
                stale += 1
            closing, self.idle_lines[:stale] = self.idle_lines[:stale], []
        for line in closing:
            line.close()

    def _close_lines(self) -> None:
        with self.lock:
            closing, self.idle_lines = self.idle_lines, []
        for line in closing:
            line.close()
        self.lines_sock.close()

    @property
    def usable(self) -> bool:
        # Not once it is being killed: the caller whose timeout killed it may call again
        # before the reader has seen it die, and must then wait for the next worker.
        return not self.dead and self.kill_reason is None

    def kill(self, reason: str) -> None:
        with self.lock:
            if self.kill_reason is None:
                self.kill_reason = reason
        with contextlib.suppress(OSError):
            self.proc.kill()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # -- the control socket (its reader thread) ---------------------------------------

    def _read(self) -> None:
        """Dispatch the worker's frames until its socket closes, then bury it."""
        try:
            while (frame := self.channel.recv()) is not None:
                self._dispatch(*frame)
        except ProtocolError as exc:
            self.owner.replace(self, frame_fault(exc, self.max_response))
        except OSError:
            pass  # ECONNRESET and the like: the worker died mid-write
        self.owner.worker_died(self, *self._bury())

    def _dispatch(self, kind: Kind, request_id: int, payload: bytes) -> None:
        if kind in (Kind.PONG, Kind.READY):
            pending = self.take(request_id)
            if pending is not None:
                if kind is Kind.READY:
                    self.rings = _serves_rings(payload) and hasattr(os, "memfd_create")
                    self.ready = True
                pending.resolve(payload)
        elif kind is Kind.ERROR:
            pending = self.take(request_id)
            if pending is not None:
                method = pending.method
                pending.fail(unpack_error(payload, plugin_id=self.plugin_id, method=method))
        elif kind is Kind.HOST_CALL:
            method, request = unpack_call(payload)
            self.owner.host_call(self, request_id, method, request)
        elif kind is Kind.THREAD_LINE:
            self._take_thread_line()
        else:
            raise ProtocolError(f"unexpected {kind.name} frame from the worker")

    def _take_thread_line(self) -> None:
        """Serve the thread line the worker just announced, on a thread of its own; one
        over _THREAD_LINES_TAKEN is refused (closed: the plugin's thread then calls on the
        control socket). ProtocolError when the worker did not pass a sealed ring with it."""
        try:
            message, fds, flags, _ = socket.recv_fds(self.lines_sock, 1, 2, _CMSG_CLOEXEC)
        except OSError as exc:
            raise ProtocolError(f"a thread line was announced but not passed ({exc})") from None
        if not message:
            return  # the worker is gone: its reader sees the EOF next
        if not _CMSG_CLOEXEC:
            for fd in fds:
                os.set_inheritable(fd, False)
        sock = ring = None
        try:
            if len(fds) != 2 or flags & socket.MSG_CTRUNC or self.core is None:
                # Out of file descriptors here, or a worker that broke the protocol; either
                # way the plugin's thread sees the line hang up and uses the control socket.
                log.warning(
                    "plugin %s: a thread line of its worker could not be taken (%d of 2 "
                    "descriptors%s); that thread's host calls take the slower way",
                    self.plugin_id,
                    len(fds),
                    "" if self.core is not None else ", no native core here",
                )
                return
            try:
                ring = self.core.map_ring(fds[1])
            except ValueError as exc:
                raise ProtocolError(str(exc)) from None
            except OSError as exc:
                log.warning("plugin %s: cannot map a thread line's ring: %s", self.plugin_id, exc)
                return
            try:
                sock = socket.socket(fileno=fds[0])
                fds[0] = -1
                line = CallLine(sock, self.max_frame, None, self.core, ring)
            except OSError as exc:  # not a stream socket
                raise ProtocolError(f"a thread line without a socket of its own ({exc})") from None
            ring = sock = None  # the line's from now on
            with self.lock:
                refused = self.dead or len(self.thread_lines) >= _THREAD_LINES_TAKEN
                if not refused:
                    self.thread_lines.add(line)
            if refused:
                line.close()
                return
            thread = threading.Thread(
                target=self._serve_thread_line,
                args=(line,),
                name=f"cliproxy-isolated-{self.plugin_id}-{self.pid}-thread-line",
                daemon=True,
            )
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: the plugin's thread uses the socket
                with self.lock:
                    self.thread_lines.discard(line)
                line.close()
        finally:
            if ring is not None:
                cast(HostCore, self.core).ring_abort(ring)
                cast(HostCore, self.core).ring_unmap(ring)
            if sock is not None:
                sock.close()
            for fd in fds:
                if fd >= 0:
                    os.close(fd)

    def _serve_thread_line(self, line: CallLine) -> None:
        """Answer the host calls of one plugin thread on its line, until it closes."""
        answer_host = self.owner.answer_host
        try:
            frame = line.serve(None, b"", self._serve_spin())
            while frame is not None:
                kind, request_id, payload = frame
                if kind is not Kind.HOST_CALL:
                    raise ProtocolError(f"unexpected {kind.name} frame on a thread line")
                method, request = unpack_call(payload)
                frame = line.serve(request_id, answer_host(method, request), self._serve_spin())
        except ProtocolError as exc:
            self.owner.replace(self, frame_fault(exc, self.max_response))
        except OSError:
            pass  # the worker died mid-write; its reader buries it
        finally:
            with self.lock:
                self.thread_lines.discard(line)
            line.close()

    def _serve_spin(self) -> float:
        # A thread that calls the host again at once is caught polling, while a CPU is spare.
        return self.spin_s if self.spin_s and spare_cpu() else 0.0

    def _bury(self) -> tuple[str | None, str | None]:
        """Reap the process and fail what waited on it: why it died, if that counts, and
        the signal that killed it."""
        with self.lock:
            self.dead = True
            pending = list(self.pending.values())
            self.pending.clear()
        try:
            returncode = self.proc.wait(REAP_GRACE)
        except subprocess.TimeoutExpired:
            self.kill("the worker closed its socket but kept running; it was killed")
            returncode = self.proc.wait()
        self.channel.close()
        self._close_lines()
        with self.lock:
            thread_lines = list(self.thread_lines)
        for line in thread_lines:  # a dead worker closes no ring: wake their threads
            line.abort()
        for item in pending:
            if item.line is not None:  # its caller waits on the line: EOF wakes it
                item.line.abort()
        how, signame = describe_exit(returncode)
        reason = self.kill_reason
        for item in pending:
            item.fail(self._death_error(item.method, how, reason))
        if self.stopping or not self.ready:
            return None, signame  # an exit we asked for, or a failed start (handled there)
        verb = "was " if signame else ""
        return reason or f"the worker {verb}{how} {died_where(pending)}", signame

    def _death_error(self, method: str | None, how: str, reason: str | None) -> PluginError:
        if self.stopping:
            return unloaded_while(self.plugin_id, method)
        if method is None:
            cause = reason or f"{how} before the plugin was ready"
            return PluginLoadError(
                f"the worker loading {self.path} stopped: {cause}",
                plugin_id=self.plugin_id,
            )
        message = f"plugin {self.plugin_id} crashed in {method} (worker {how})"
        if reason:
            message = f"plugin {self.plugin_id} lost its worker in {method}: {reason}"
        return PluginCrashed(message, plugin_id=self.plugin_id, method=method)


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))


def _serves_rings(ready: bytes) -> bool:
    """Whether a READY payload says the worker's native core serves its lines (and so
    takes a ring with each)."""
    try:
        return orjson.loads(ready).get("rings") is True
    except (orjson.JSONDecodeError, AttributeError):
        return False


def describe_exit(returncode: int) -> tuple[str, str | None]:
    """('killed by SIGSEGV', 'SIGSEGV') or ('exited with status 3', None)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}", name
    return f"exited with status {returncode}", None
