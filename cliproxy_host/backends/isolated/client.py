"""A plugin in a worker process: NativePlugin's interface, with crashes, hangs and limits contained.

The worker (`_worker.py`) loads the library with NativePlugin and serves it. This side
runs calls from any number of threads, answers the plugin's host callbacks, pings the
worker, and restarts it when it dies, hangs or stops answering, until too many failures
fuse the plugin.

How calls and host calls travel, and the frames: see `_wire.py`.

Decisions worth knowing:
- Every way a worker goes (crash, call timeout, missed ping, broken frame) counts toward
  the fuse: a plugin that hangs over and over costs a restart each time, like one that
  crashes.
- A restarted worker is given the last successful plugin.register/plugin.reconfigure
  request, as plugin.register (the new process has never been registered).
- A fused plugin stays fused until a plugin.register/plugin.reconfigure call brings a
  config different from the one it crashed with, or the host builds a new backend (file
  changed, operator re-enabled it).
- Frames from the worker (responses and the plugin's host-call requests alike) are capped
  at max_response_bytes plus a little: a larger length means a broken worker.
- Lines idle for line_idle_s are closed, and their worker threads end.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from ... import envelope
from ...abi import HostHandler, Method
from ...errors import (
    HostCallFailed,
    PluginBusy,
    PluginCrashed,
    PluginError,
    PluginLoadError,
    PluginTimeout,
    PluginUnavailable,
    PluginUnloading,
)
from ..protocol import Health, State
from .wire import (
    HANDSHAKE_ID,
    METHOD_CACHE_MAX,
    CallLine,
    Channel,
    FrameTooLarge,
    Kind,
    Latch,
    ProtocolError,
    unpack_call,
    unpack_error,
)

__all__ = ["DEFAULT_DRAIN_TIMEOUT", "IsolatedPlugin", "IsolationLimits"]

log = logging.getLogger(__name__)

DEFAULT_DRAIN_TIMEOUT: Final = 5.0
# What a frame from the worker may carry beyond a response: error JSON, a method name.
_FRAME_SLACK: Final = 64 * 1024
# After the drain: time for plugin.shutdown and shutdown() before the worker is killed.
_EXIT_GRACE: Final = 2.0
# A worker whose socket closed but which still runs is killed after this long.
_REAP_GRACE: Final = 2.0
_LINE_LIMIT: Final = 64 * 1024
_BACKOFF_START: Final = 0.25
_CONFIG_METHODS: Final = frozenset({Method.REGISTER.value, Method.RECONFIGURE.value})
_PING: Final = "(ping)"


@dataclass(frozen=True)
class IsolationLimits:
    """How an isolated plugin is run and when it is given up on."""

    timeout_s: float | None = 30.0  # per call
    memory_limit_mb: int | None = None
    cpu_limit_s: int | None = None
    max_response_bytes: int = 64 * 1024 * 1024
    fuse_crashes: int = 5  # crashes within fuse_window_s that fuse the plugin
    fuse_window_s: float = 60.0
    backoff_initial_s: float = 0.0  # first restart immediately
    backoff_max_s: float = 30.0  # growing (x2 from 0.25 s), capped here
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 2.0
    start_timeout_s: float = 10.0  # worker start + dlopen + init
    # A call polls for its answer this long before it sleeps (spin_until_readable), and
    # the worker polls as long for the next call; 0 turns it off. Methods whose calls
    # outlast it are not polled for.
    spin_us: int = 50
    line_idle_s: float = 30.0  # call lines unused this long are closed (one stays open)

    def __post_init__(self) -> None:
        positive = {
            "timeout_s": self.timeout_s,
            "memory_limit_mb": self.memory_limit_mb,
            "cpu_limit_s": self.cpu_limit_s,
            "max_response_bytes": self.max_response_bytes,
            "fuse_crashes": self.fuse_crashes,
            "fuse_window_s": self.fuse_window_s,
            "ping_interval_s": self.ping_interval_s,
            "ping_timeout_s": self.ping_timeout_s,
            "start_timeout_s": self.start_timeout_s,
            "line_idle_s": self.line_idle_s,
        }
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise ValueError(f"IsolationLimits.{name} must be positive, got {value}")
        if self.spin_us < 0:
            raise ValueError(f"IsolationLimits.spin_us must not be negative, got {self.spin_us}")
        if self.backoff_initial_s < 0 or self.backoff_max_s < 0:
            raise ValueError("IsolationLimits backoff times must not be negative")


Job = Callable[[], None]


class Pool:
    """Runs blocking jobs on threads, growing when every thread is busy.

    Unbounded on purpose: a plugin call may wait for a host callback that calls the
    plugin again, so a job can depend on a later job, and a bounded pool could deadlock.
    Threads that stay idle for `idle_s` exit, so a burst does not pin threads forever.
    """

    def __init__(self, name: str, idle_s: float = 30.0) -> None:
        self._name = name
        self._idle_s = idle_s
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job, minus jobs queued for them
        self._threads: set[threading.Thread] = set()
        self._closed = False
        self._serial = itertools.count(1)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name}: pool is closed")
            if self._idle:
                self._idle -= 1
                self._jobs.put(job)
                return
            thread = threading.Thread(
                target=self._run,
                args=(job,),
                name=f"{self._name}-{next(self._serial)}",
                daemon=True,
            )
            self._threads.add(thread)
        thread.start()

    def _run(self, job: Job | None) -> None:
        while job is not None:
            job()
            with self._lock:
                if self._closed:
                    break
                self._idle += 1
            try:
                job = self._jobs.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    # A job may have been queued for us between the timeout and the lock.
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        job = None
        with self._lock:
            self._threads.discard(threading.current_thread())

    def close(self, timeout: float) -> None:
        """Stop idle threads and wait (bounded) for busy ones to finish their job."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
            threads = list(self._threads)
        for _ in range(idle):
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))


# -- the host side -----------------------------------------------------------------------


class _Pending:
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


class _WorkerGone(Exception):
    """The request never reached the worker (it was already gone): safe to send again."""


class _Worker:
    """One worker process: its socket, its requests in flight, the threads reading it."""

    def __init__(self, owner: IsolatedPlugin) -> None:
        self.lock = threading.Lock()
        self.handshake = _Pending(None)
        self.pending: dict[int, _Pending] = {HANDSHAKE_ID: self.handshake}
        self.ids = owner._ids
        self.dead = False  # set first when the socket is gone; no request is sent after it
        self.ready = False  # the plugin is loaded (READY received)
        self.stopping = False  # the host asked it to exit: its death is expected
        self.kill_reason: str | None = None
        self.max_frame = owner._limits.max_response_bytes + _FRAME_SLACK
        self.line_timeout = owner._limits.timeout_s
        self.idle_lines: list[CallLine] = []  # a stack: the line used last is used next

        parent_sock, child_sock = socket.socketpair()
        # New call lines reach the worker through this one, as file descriptors.
        lines_sock, lines_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        read_fd, write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                owner._worker_command(child_sock.fileno(), lines_child.fileno()),
                # /dev/null rather than closed: a free fd 0 would be taken by the plugin's
                # next open() and mistaken for stdin.
                stdin=subprocess.DEVNULL,
                # stdout too: a plugin's printf belongs in the host's log, not its stdout.
                stdout=write_fd,
                stderr=write_fd,
                pass_fds=(child_sock.fileno(), lines_child.fileno()),
                # Out of the host's process group: a Ctrl-C at the terminal is the host's
                # to handle; the worker goes when the host does (PR_SET_PDEATHSIG, EOF).
                start_new_session=True,
                env=_worker_env(),
            )
        except BaseException:
            parent_sock.close()
            lines_sock.close()
            os.close(read_fd)
            raise
        finally:
            child_sock.close()
            lines_child.close()
            os.close(write_fd)
        self.pid = self.proc.pid
        self.channel = Channel(parent_sock, self.max_frame)
        self.lines_sock = lines_sock
        self.reader = threading.Thread(
            target=owner._read_worker,
            args=(self,),
            name=f"cliproxy-isolated-{owner.plugin_id}-{self.pid}",
            daemon=True,
        )
        self.output = threading.Thread(
            target=_forward_output,
            args=(os.fdopen(read_fd, "rb"), owner.plugin_id),
            name=f"cliproxy-isolated-{owner.plugin_id}-{self.pid}-stderr",
            daemon=True,
        )
        self.exit_watch = threading.Thread(
            target=self._watch_exit,
            name=f"cliproxy-isolated-{owner.plugin_id}-{self.pid}-exit",
            daemon=True,
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

    def register(self, method: str) -> tuple[int, _Pending] | None:
        """A request ID and its pending answer, or None when the worker is gone."""
        pending = _Pending(method)
        with self.lock:
            if self.dead or self.kill_reason is not None:
                return None
            request_id = next(self.ids)
            self.pending[request_id] = pending
        return request_id, pending

    def checkout(self) -> CallLine | None:
        """A call line for one call: an idle one, or a new one; None when the worker is gone."""
        with self.lock:
            if self.dead:
                return None
            if self.idle_lines:
                return self.idle_lines.pop()
        ours, theirs = socket.socketpair()
        try:
            with theirs:
                socket.send_fds(self.lines_sock, [b"L"], [theirs.fileno()])
        except OSError:
            ours.close()
            return None
        try:
            return CallLine(ours, self.max_frame, self.line_timeout)
        except OSError:
            ours.close()
            raise

    def checkin(self, line: CallLine) -> None:
        """A line whose call was answered in full, ready for the next call."""
        line.idle_since = time.monotonic()
        with self.lock:
            if not self.dead:
                self.idle_lines.append(line)
                return
        line.close()

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

    def close_lines(self) -> None:
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

    def take(self, request_id: int) -> _Pending | None:
        with self.lock:
            return self.pending.pop(request_id, None)

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


def _worker_env() -> dict[str, str]:
    # The worker must import this very package, whether the host runs installed or from
    # a checkout (where only the host's sys.path, not the worker's, would find it).
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _forward_output(stream: IO[bytes], plugin_id: str) -> None:
    """Each line the worker writes to stdout/stderr, as a WARNING naming the plugin."""
    logger = logging.getLogger(f"cliproxy_host.plugin.{plugin_id}")
    with stream:
        # Bounded lines: a plugin writing without newlines must not grow a host buffer.
        for line in iter(lambda: stream.readline(_LINE_LIMIT), b""):
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            if text:
                logger.warning("%s: %s", plugin_id, text)


def _describe_exit(returncode: int) -> tuple[str, str | None]:
    """('killed by SIGSEGV', 'SIGSEGV') or ('exited with status 3', None)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}", name
    return f"exited with status {returncode}", None


class IsolatedPlugin:
    """A plugin library in a worker process; satisfies abi.PluginBackend. Thread-safe."""

    def __init__(
        self,
        plugin_id: str,
        path: Path,
        handler: HostHandler,
        limits: IsolationLimits | None = None,
    ) -> None:
        """Start the worker and load the library there; raise what NativePlugin would."""
        self.plugin_id = plugin_id
        self.path = path
        self._limits = limits or IsolationLimits()
        self._spin_s = self._limits.spin_us / 1e6
        self._fast: dict[str, bool] = {}  # methods whose last call outlasted the spin: False
        self._ids = itertools.count(HANDSHAKE_ID + 1)
        self._handler = handler
        self._cond = threading.Condition()
        self._worker: _Worker | None = None
        self._state = State.RESTARTING
        self._restarts = 0
        self._last_error: str | None = None
        self._last_signal: str | None = None
        self._failures: deque[float] = deque()
        self._fuse_reason: str | None = None
        self._need_restart = False
        self._config: bytes | None = None  # replayed to every new worker
        self._inflight = 0
        self._closing = False
        self._close_deadline = 0.0
        self._stop = False  # the drain is over: the supervisor shuts the worker down
        self._threads: list[threading.Thread] = []
        self._host_calls = Pool(f"cliproxy-isolated-{plugin_id}-host")
        self._started = threading.Event()
        self._start_error: PluginError | None = None
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"cliproxy-isolated-{plugin_id}", daemon=True
        )
        self._supervisor.start()
        self._started.wait()
        if self._start_error is not None:
            self._supervisor.join()
            self._host_calls.close(0.0)
            raise self._start_error

    # -- calls ------------------------------------------------------------------------

    def call(self, method: str, request: bytes) -> bytes:
        """Send a request envelope; answer the plugin's response envelope bytes."""
        timeout = self._limits.timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._closing:
                raise self._unloading(method)
            self._inflight += 1
        try:
            while True:
                worker = self._wait_for_worker(method, request, deadline)
                try:
                    data = self._exchange(worker, method, request, deadline)
                except _WorkerGone:
                    continue
                if method in _CONFIG_METHODS:
                    self._remember_config(request, data)
                return data
        finally:
            with self._cond:
                self._inflight -= 1
                if self._closing and not self._inflight:
                    self._cond.notify_all()

    def _wait_for_worker(self, method: str, request: bytes, deadline: float | None) -> _Worker:
        """The running worker; while one is being started, wait for it (bounded)."""
        with self._cond:
            while True:
                if self._closing:
                    raise self._unloading(method)
                if self._state is State.FUSED:
                    if method in _CONFIG_METHODS and request != self._config:
                        self._unfuse()
                    else:
                        raise PluginUnavailable(
                            self._fuse_reason or "fused",
                            plugin_id=self.plugin_id,
                            method=method,
                        )
                worker = self._worker
                if self._state is State.RUNNING and worker is not None and worker.usable:
                    return worker
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PluginUnavailable(
                        f"plugin {self.plugin_id} is restarting its worker after: "
                        f"{self._last_error}; retry shortly",
                        plugin_id=self.plugin_id,
                        method=method,
                        retryable=True,
                    )
                self._cond.wait(remaining)

    def _exchange(
        self, worker: _Worker, method: str, request: bytes, deadline: float | None
    ) -> bytes:
        registered = worker.register(method)
        if registered is None:
            raise _WorkerGone
        request_id, pending = registered
        line = worker.checkout()
        if line is None:
            worker.take(request_id)
            raise _WorkerGone
        pending.line = line
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        spin = self._spin_s if self._fast.get(method, True) else 0.0
        started = time.perf_counter()
        try:
            line.send(request_id, method, request, timeout)
        except TimeoutError:
            return self._timed_out(worker, request_id, pending, method, line)
        except OSError:
            # The worker is gone and never read the whole frame, so it never ran the
            # call: it may go to the next worker. Its reader is handling the death.
            line.close()
            worker.take(request_id)
            raise _WorkerGone from None
        # The request stays registered while it runs: if the worker dies, its reader fails
        # it with the reason, whichever thread notices first.
        try:
            # The plugin's host calls from the thread running this call come on this line
            # too, and are answered here, on the caller's thread: no hand-off either way.
            while (frame := line.recv(spin)) is not None and frame[0] is Kind.HOST_CALL:
                host_method, host_request = unpack_call(frame[2])
                answer = self._host_answer(host_method, host_request)
                left = None if deadline is None else deadline - time.monotonic()
                line.answer(frame[1], answer, left)
                # The plugin goes on at once with what it was answered: its next frame
                # (another host call, or the result) is worth polling for.
                spin = self._spin_s
        except TimeoutError:
            return self._timed_out(worker, request_id, pending, method, line)
        # The worker is replaced before the line is closed: a worker whose line closes
        # under a call exits, and would otherwise die for a reason that is not the one.
        except FrameTooLarge as exc:
            self._replace(
                worker,
                f"the worker sent {exc}, which max_response_bytes "
                f"({self._limits.max_response_bytes}) does not allow; it was killed",
            )
            line.close()
            return self._lost(worker, pending, method)
        except ProtocolError as exc:
            self._replace(worker, f"the worker broke the frame protocol ({exc}); it was killed")
            line.close()
            return self._lost(worker, pending, method)
        except OSError:  # ECONNRESET and the like: the worker died mid-write
            frame = None
        if frame is None:
            line.close()
            return self._lost(worker, pending, method)
        kind, answered, payload = frame
        worker.take(request_id)  # answered: even a worker dying right now cannot fail it
        if self._spin_s:
            # Spin for the next call of this method only if this one was answered within
            # the spin time: a slow method is slept on, not burnt CPU on.
            fast = time.perf_counter() - started <= self._spin_s
            if self._fast.get(method, True) is not fast and len(self._fast) < METHOD_CACHE_MAX:
                self._fast[method] = fast
        if answered != request_id or kind not in (Kind.RESULT, Kind.ERROR):
            self._replace(
                worker, f"the worker answered call {request_id} with {kind.name} {answered}"
            )
            line.close()
            raise PluginCrashed(
                f"plugin {self.plugin_id} lost its worker in {method}: it broke the frame protocol",
                plugin_id=self.plugin_id,
                method=method,
            )
        if kind is Kind.RESULT:
            worker.checkin(line)
            return payload
        error = unpack_error(payload, plugin_id=self.plugin_id, method=method)
        if isinstance(error, PluginBusy):
            line.close()  # the worker had no thread for this line and closed its end
        else:
            worker.checkin(line)
        raise error

    def _timed_out(
        self, worker: _Worker, request_id: int, pending: _Pending, method: str, line: CallLine
    ) -> bytes:
        # Taken and replaced before the line is closed: a worker whose line closes under
        # a call exits by itself, and its death would be taken for a crash.
        if worker.take(request_id) is None:
            line.close()
            return self._lost(worker, pending, method)  # it died as the time ran out
        # A native call cannot be interrupted; killing its process is the only way.
        waited = self._limits.timeout_s
        self._replace(
            worker, f"{method} did not answer within {waited:g} s, so the worker was killed"
        )
        line.close()
        raise PluginTimeout(
            f"plugin {self.plugin_id} did not answer {method} within {waited:g} s; its "
            "worker was killed and is being restarted",
            plugin_id=self.plugin_id,
            method=method,
        )

    def _lost(self, worker: _Worker, pending: _Pending, method: str) -> bytes:
        """The line broke: the worker is dying, and its reader fails the call with why."""
        if not pending.event.wait(_REAP_GRACE * 2 + 1.0):
            # Still alive with a line closed under a call: broken, so it goes.
            worker.kill(f"the worker closed the line of a call to {method}; it was killed")
            pending.event.wait()
        if pending.error is not None:
            raise pending.error
        raise PluginCrashed(  # pragma: no cover - calls are only ever failed on the socket
            f"plugin {self.plugin_id} lost its worker in {method}",
            plugin_id=self.plugin_id,
            method=method,
        )

    def _replace(self, worker: _Worker, reason: str) -> None:
        """Kill a running worker that failed; it shows as restarting from this moment on."""
        with self._cond:
            if worker is self._worker and self._state is State.RUNNING:
                self._state = State.RESTARTING
        worker.kill(reason)

    def _remember_config(self, request: bytes, answer: bytes) -> None:
        try:
            envelope.decode(answer)
        except PluginError:
            return  # refused: the plugin still runs its previous config
        with self._cond:
            self._config = bytes(request)

    def _unloading(self, method: str) -> PluginError:
        return PluginUnloading(
            "the plugin is being unloaded; retry once it has been reloaded",
            plugin_id=self.plugin_id,
            method=method,
            retryable=True,
        )

    # -- the worker's frames (its reader thread) ----------------------------------------

    def _read_worker(self, worker: _Worker) -> None:
        """Dispatch the worker's frames until its socket closes, then handle its death."""
        try:
            while (frame := worker.channel.recv()) is not None:
                self._dispatch(worker, *frame)
        except FrameTooLarge as exc:
            self._replace(
                worker,
                f"the worker sent {exc}, which max_response_bytes "
                f"({self._limits.max_response_bytes}) does not allow; it was killed",
            )
        except ProtocolError as exc:
            self._replace(worker, f"the worker broke the frame protocol ({exc}); it was killed")
        except OSError:
            pass  # ECONNRESET and the like: the worker died mid-write
        self._on_death(worker)

    def _dispatch(self, worker: _Worker, kind: Kind, request_id: int, payload: bytes) -> None:
        if kind in (Kind.PONG, Kind.READY):
            pending = worker.take(request_id)
            if pending is not None:
                if kind is Kind.READY:
                    worker.ready = True
                pending.resolve(payload)
        elif kind is Kind.ERROR:
            pending = worker.take(request_id)
            if pending is not None:
                method = pending.method
                pending.fail(unpack_error(payload, plugin_id=self.plugin_id, method=method))
        elif kind is Kind.HOST_CALL:
            method, request = unpack_call(payload)
            try:
                # Not on this thread: a callback may block (HTTP) or call the plugin again,
                # whose answer this thread has to read.
                self._host_calls.submit(
                    lambda: self._answer_host(worker, request_id, method, request)
                )
            except RuntimeError:  # closed: the plugin is gone as far as the host knows
                answer = self._unloading(method).to_envelope()
                with contextlib.suppress(OSError):
                    worker.channel.send(Kind.HOST_RESULT, request_id, answer)
        else:
            raise ProtocolError(f"unexpected {kind.name} frame from the worker")

    def _answer_host(self, worker: _Worker, request_id: int, method: str, request: bytes) -> None:
        answer = self._host_answer(method, request)
        with contextlib.suppress(OSError):  # the worker is gone; its reader handles that
            worker.channel.send(Kind.HOST_RESULT, request_id, answer)

    def _host_answer(self, method: str, request: bytes) -> bytes:
        # The same answers NativePlugin's trampoline gives, so a plugin cannot tell.
        try:
            return self._handler(self.plugin_id, method, request)
        except PluginError as exc:
            return exc.to_envelope()
        except Exception as exc:
            log.exception("plugin %s: host callback %s failed", self.plugin_id, method)
            return HostCallFailed(f"host callback {method} failed: {exc}").to_envelope()

    def _on_death(self, worker: _Worker) -> None:
        with worker.lock:
            worker.dead = True
            pending = list(worker.pending.values())
            worker.pending.clear()
        try:
            returncode = worker.proc.wait(_REAP_GRACE)
        except subprocess.TimeoutExpired:
            worker.kill("the worker closed its socket but kept running; it was killed")
            returncode = worker.proc.wait()
        worker.channel.close()
        worker.close_lines()
        for item in pending:
            if item.line is not None:  # its caller waits on the line: EOF wakes it
                with contextlib.suppress(OSError):
                    item.line.sock.shutdown(socket.SHUT_RDWR)
        how, signame = _describe_exit(returncode)
        reason = worker.kill_reason
        for item in pending:
            item.fail(self._death_error(worker, item.method, how, reason))
        if worker.stopping or not worker.ready:
            return  # an exit we asked for, or a failed start (the supervisor records it)
        methods = sorted({p.method for p in pending if p.method and p.method != _PING})
        where = f"in {', '.join(methods)}" if methods else "while idle"
        verb = "was " if signame else ""
        self._record_failure(reason or f"the worker {verb}{how} {where}", signame)

    def _death_error(
        self, worker: _Worker, method: str | None, how: str, reason: str | None
    ) -> PluginError:
        if worker.stopping:
            return PluginUnloading(
                f"the plugin was unloaded while {method} was running; retry once it has "
                "been reloaded",
                plugin_id=self.plugin_id,
                method=method,
                retryable=True,
            )
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

    # -- restarts, the fuse and health --------------------------------------------------

    def _record_failure(self, error: str, signame: str | None) -> None:
        with self._cond:
            now = time.monotonic()
            self._failures.append(now)
            self._forget_old_failures(now)
            self._last_error = error
            self._last_signal = signame
            if self._closing:
                return
            count = len(self._failures)
            if count >= self._limits.fuse_crashes:
                self._state = State.FUSED
                self._need_restart = False
                self._fuse_reason = self._last_error = (
                    f"plugin {self.plugin_id} fused after {count} crashes in "
                    f"{self._limits.fuse_window_s:g} s: {error}; change its config or file, "
                    "or re-enable it"
                )
                log.error("%s", self._fuse_reason)
            else:
                self._state = State.RESTARTING
                self._need_restart = True
                log.warning("plugin %s: %s; restarting its worker", self.plugin_id, error)
            self._cond.notify_all()

    def _forget_old_failures(self, now: float) -> None:
        while self._failures and now - self._failures[0] > self._limits.fuse_window_s:
            self._failures.popleft()

    def _unfuse(self) -> None:
        log.warning("plugin %s: new config; restarting its fused worker", self.plugin_id)
        self._failures.clear()
        self._fuse_reason = None
        self._state = State.RESTARTING
        self._need_restart = True
        self._cond.notify_all()

    def _backoff(self) -> float:
        """Immediately for the first recent failure, then 0.25 s doubling, capped."""
        self._forget_old_failures(time.monotonic())
        recent = len(self._failures)
        if recent <= 1:
            return self._limits.backoff_initial_s
        return min(_BACKOFF_START * 2.0 ** (recent - 2), self._limits.backoff_max_s)

    def health(self) -> Health:
        with self._cond:
            return Health(
                state=self._state,
                restarts=self._restarts,
                last_error=self._last_error,
                last_signal=self._last_signal,
            )

    # -- the supervisor thread ----------------------------------------------------------

    def _supervise(self) -> None:
        # Every worker is started from this thread, and this thread outlives them all:
        # PR_SET_PDEATHSIG fires when the *thread* that forked the worker ends, so a worker
        # forked from a caller's short-lived thread would die with that thread.
        try:
            self._start_worker()
        except PluginError as exc:
            self._start_error = exc
            return
        except Exception as exc:  # e.g. no thread to be had: still a load error, not a hang
            self._start_error = PluginLoadError(
                f"cannot start a worker for {self.path}: {exc}",
                plugin_id=self.plugin_id,
            )
            return
        finally:
            self._started.set()
        next_ping = time.monotonic() + self._limits.ping_interval_s
        while True:
            try:
                action = self._next_action(next_ping)
                if action == "stop":
                    self._stop_worker()
                    return
                if action == "restart":
                    self._restart()
                else:
                    self._ping()
                next_ping = time.monotonic() + self._limits.ping_interval_s
            except Exception:  # this thread must survive, or workers stop being restarted
                log.exception("plugin %s: supervisor error", self.plugin_id)

    def _next_action(self, next_ping: float) -> str:
        with self._cond:
            while True:
                if self._stop:
                    return "stop"
                if self._closing:
                    self._cond.wait()
                elif self._need_restart:
                    return "restart"
                elif self._state is State.RUNNING:
                    wait = next_ping - time.monotonic()
                    if wait <= 0:
                        return "ping"
                    self._cond.wait(wait)
                else:
                    self._cond.wait()

    def _restart(self) -> None:
        with self._cond:
            delay = self._backoff()
            if delay > 0:
                self._cond.wait_for(lambda: self._closing, delay)
            if self._closing:
                return
            self._need_restart = False
            self._restarts += 1
            self._state = State.RESTARTING
        try:
            self._start_worker()
        except PluginError as exc:
            self._record_failure(f"restarting the worker failed: {exc.message}", None)

    def _start_worker(self) -> None:
        """Start a worker, load the plugin, replay its config; RUNNING when all went well."""
        try:
            worker = _Worker(self)
        except OSError as exc:
            raise PluginLoadError(
                f"cannot start a worker process for {self.path}: {exc}",
                plugin_id=self.plugin_id,
            ) from None
        with self._cond:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.extend(worker.threads)
            self._worker = worker
            if self._closing:
                worker.kill("the plugin was unloaded while its worker started")
        handshake = worker.handshake
        if not handshake.event.wait(self._limits.start_timeout_s):
            worker.kill(
                f"it did not load the plugin within {self._limits.start_timeout_s:g} s "
                "(start_timeout_s), so it was killed"
            )
            handshake.event.wait()
        if handshake.error is not None:
            # The worker is gone or exits by itself after a load error: reap it first.
            worker.join(_REAP_GRACE + 1.0)
            err = handshake.error
            if isinstance(err, PluginLoadError):
                raise err
            raise PluginLoadError(err.message, code=err.code, plugin_id=self.plugin_id)
        config = self._config
        if config is not None:
            deadline = None
            if self._limits.timeout_s is not None:
                deadline = time.monotonic() + self._limits.timeout_s
            try:
                self._exchange(worker, Method.REGISTER.value, config, deadline)
            except _WorkerGone:
                return
            except PluginError as exc:
                if not worker.usable:
                    return  # its death is recorded by its reader
                log.warning("plugin %s: its new worker refused the config: %s", self.plugin_id, exc)
        with self._cond:
            if worker is self._worker and worker.usable and not self._closing:
                self._state = State.RUNNING
                self._cond.notify_all()

    def _ping(self) -> None:
        with self._cond:
            worker = self._worker
            if self._state is not State.RUNNING or worker is None:
                return
        worker.trim_lines(self._limits.line_idle_s)
        registered = worker.register(_PING)
        if registered is None:
            return
        request_id, pending = registered
        try:
            worker.channel.send(Kind.PING, request_id)
        except OSError:
            return  # dead: its reader handles it
        if pending.event.wait(self._limits.ping_timeout_s) or worker.take(request_id) is None:
            return
        reason = (
            f"the worker missed a ping (no answer within {self._limits.ping_timeout_s:g} s), "
            "so it was killed"
        )
        with self._cond:
            if worker is self._worker and self._state is State.RUNNING:
                self._state = State.UNHEALTHY
                self._last_error = reason
                self._cond.notify_all()
        worker.kill(reason)

    def _stop_worker(self) -> None:
        with self._cond:
            worker = self._worker
            threads = list(self._threads)
        if worker is not None and not worker.dead:
            worker.stopping = True
            wait = 0.0
            if worker.ready:
                drain = max(0.0, self._close_deadline - time.monotonic())
                with contextlib.suppress(OSError):
                    worker.channel.send(Kind.SHUTDOWN, 0, f"{drain:.3f}".encode())
                wait = drain + _EXIT_GRACE
            worker.reader.join(wait)
            if worker.reader.is_alive():
                worker.kill(f"the worker did not exit within {wait:g} s of shutdown; killed")
        deadline = time.monotonic() + _REAP_GRACE + 1.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- closing ------------------------------------------------------------------------

    def close(self, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Refuse new calls, drain those in flight (bounded), shut the plugin down, exit.

        The worker runs NativePlugin.close (plugin.shutdown, shutdown(), dlclose) and
        exits; if it has not exited shortly after the drain, it is killed.
        """
        with self._cond:
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + timeout
                self._cond.notify_all()  # callers waiting for a restart give up
                if not self._cond.wait_for(lambda: not self._inflight, timeout):
                    log.warning(
                        "plugin %s: %d call(s) still running after %.1fs; they fail as the "
                        "worker exits",
                        self.plugin_id,
                        self._inflight,
                        timeout,
                    )
                worker = self._worker
                if worker is not None and self._state is not State.RUNNING:
                    # Starting or replaying its config: nothing to shut down gracefully.
                    worker.stopping = True
                    worker.kill("the plugin was unloaded while its worker started")
                self._stop = True
                self._cond.notify_all()
        if threading.current_thread() is not self._supervisor:
            self._supervisor.join(timeout + _EXIT_GRACE + _REAP_GRACE + 2.0)
        self._host_calls.close(_REAP_GRACE)

    def __repr__(self) -> str:
        return f"IsolatedPlugin({self.plugin_id!r}, {str(self.path)!r})"

    # -- the worker's command line --------------------------------------------------------

    def _worker_command(self, fd: int, lines_fd: int) -> list[str]:
        limits = self._limits
        command = [
            sys.executable,
            "-m",
            "cliproxy_host.backends.isolated.worker",
            "--fd",
            str(fd),
            "--lines-fd",
            str(lines_fd),
            "--parent-pid",
            str(os.getpid()),
            "--plugin-id",
            self.plugin_id,
            "--path",
            str(self.path),
            "--max-response-bytes",
            str(limits.max_response_bytes),
            "--spin-us",
            str(limits.spin_us),
        ]
        if limits.memory_limit_mb is not None:
            command += ["--memory-limit-mb", str(limits.memory_limit_mb)]
        if limits.cpu_limit_s is not None:
            command += ["--cpu-limit-s", str(limits.cpu_limit_s)]
        return command
