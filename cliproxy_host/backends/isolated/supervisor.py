"""Keeps an isolated plugin's worker running: start, restart with backoff, the fuse, pings, close.

Decisions worth knowing:
- Every way a worker goes (crash, call timeout, missed ping, broken frame) counts toward
  the fuse: a plugin that hangs over and over costs a restart each time, like one that
  crashes.
- A restarted worker is given the last config the plugin accepted (see `configured`), as
  plugin.register (the new process has never been registered).
- How a worker starts is the starter's (starter.py): a plugin library's restart wakes a
  standby worker spawned ahead; a plugin program starts from scratch.
- A fused plugin stays fused until a plugin.register/plugin.reconfigure call brings a
  config different from the one it crashed with, or the host builds a new backend (file
  changed, operator re-enabled it).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar

from ...abi import Method
from ...errors import PluginError, PluginLoadError, PluginUnavailable, PluginUnloading
from ..protocol import CONFIG_METHODS, Health, State
from .fuse import Fuse
from .limits import IsolationLimits
from .process import EXIT_GRACE, REAP_GRACE, WorkerGone, WorkerProcess
from .starter import FreshStarts, LibraryStarts, Starter
from .wire import HANDSHAKE_ID

log = logging.getLogger(__name__)


class Worker(Protocol):
    """What the supervisor needs of one running plugin process: a `WorkerProcess`, or a
    program speaking the socket protocol (`backends/program/`)."""

    dead: bool
    stopping: bool

    @property
    def usable(self) -> bool: ...

    @property
    def threads(self) -> tuple[threading.Thread, ...]: ...

    def kill(self, reason: str) -> None: ...

    def wait_loaded(self, timeout_s: float) -> None: ...

    def ping(self, timeout_s: float) -> bool: ...

    def trim_lines(self, idle_s: float) -> None: ...

    def shut_down(self, drain: float) -> None: ...


W = TypeVar("W", bound=Worker)


def unloading_error(plugin_id: str, method: str) -> PluginError:
    return PluginUnloading(
        "the plugin is being unloaded; retry once it has been reloaded",
        plugin_id=plugin_id,
        method=method,
        retryable=True,
    )


def library_starts(supervisor: Supervisor[WorkerProcess]) -> LibraryStarts:
    """Worker processes hosting the supervisor's plugin library (isolated mode), each woken
    from a standby where one waits (starter.py)."""
    return LibraryStarts(
        supervisor.plugin_id,
        supervisor.path,
        supervisor.limits,
        supervisor,
        lambda: supervisor.closing,
    )


class Supervisor(Generic[W]):
    """One plugin's worker processes, one at a time, and its calls in flight. Thread-safe.

    A thread of its own starts every worker, pings it, restarts it when it goes (after a
    backoff), fuses the plugin after too many failures and shuts the worker down on close.
    One class, a little over the usual size, because one lock guards the state that thread
    and the callers share (the worker, its state, the calls in flight, closing).
    """

    def __init__(
        self,
        plugin_id: str,
        path: Path,
        limits: IsolationLimits,
        replay: Callable[[W, str, bytes, float | None], object],
        host_call: Callable[[W, int, str, bytes], None],
        *,
        answer_host: Callable[[str, bytes], bytes],
        spawn: Callable[[Supervisor[W], itertools.count[int]], W] | None = None,
        starter: Callable[[Supervisor[W]], Starter[W]] | None = None,
    ) -> None:
        """`replay` sends a config to a new worker as plugin.register, bounded by the
        timeout (raising WorkerGone or PluginError like a call); `host_call` answers a host
        call a plugin made from a thread of its own (see process.Owner.host_call), and
        `answer_host` one on a thread line, on the calling thread; `spawn`
        starts a worker from scratch (it may raise OSError), or `starter` makes what
        starts them (starter.py)."""
        self.plugin_id = plugin_id
        self.path = path
        self.limits = limits
        self._replay = replay
        self.host_call = host_call  # what WorkerProcess calls for a plugin thread's host call
        self.answer_host = answer_host  # ... and on a thread line's thread
        self._ids = itertools.count(HANDSHAKE_ID + 1)
        # Taken bare on the path of every call (begin, leave): `with` on a Condition is a
        # Python-level __enter__ over the same lock, ~0.1 us more each time.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._worker: W | None = None
        self._state = State.RESTARTING
        self._restarts = 0
        self._last_error: str | None = None
        self._last_signal: str | None = None
        self._fuse = Fuse(limits)
        self._need_restart = False
        self._config: bytes | None = None  # replayed to every new worker
        self._config_timeout: float | None = None
        self._inflight = 0
        self._closing = False
        self._close_deadline = 0.0
        self._stop = False  # the drain is over: the supervisor shuts the worker down
        self._threads: list[threading.Thread] = []
        self._started = threading.Event()
        self._start_error: PluginError | None = None
        if starter is not None:
            self._starter: Starter[W] = starter(self)
        elif spawn is not None:
            self._starter = FreshStarts(partial(spawn, self))
        else:
            raise TypeError("Supervisor needs spawn or starter")
        self._thread = threading.Thread(
            target=self._supervise, name=f"cliproxy-isolated-{plugin_id}", daemon=True
        )

    def start(self) -> None:
        """Start the first worker and load the plugin; raise what NativePlugin would."""
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    @property
    def inflight(self) -> int:
        """Calls begun and not yet left, as of now (read without the lock: a hint)."""
        return self._inflight

    @property
    def closing(self) -> bool:
        """Whether the plugin is being closed."""
        with self._cond:
            return self._closing

    # -- calls ------------------------------------------------------------------------

    def enter(self, method: str) -> None:
        """A call begins; PluginUnloading once the plugin is closing."""
        with self._cond:
            if self._closing:
                raise unloading_error(self.plugin_id, method)
            self._inflight += 1

    def leave(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._closing and not self._inflight:
                self._cond.notify_all()

    def begin(self, method: str, request: bytes, deadline: float | None) -> W:
        """enter() and worker_for() at once (one lock taken on the path of every call);
        the call counts as begun even when this raises: leave() follows in every case."""
        with self._lock:
            self._inflight += 1
            if self._closing:
                raise unloading_error(self.plugin_id, method)
            worker = self._worker
            if self._state is State.RUNNING and worker is not None and worker.usable:
                return worker
            return self._wait_for_worker(method, request, deadline)

    def worker_for(self, method: str, request: bytes, deadline: float | None) -> W:
        """The running worker; while one is being started, wait for it (bounded)."""
        with self._cond:
            return self._wait_for_worker(method, request, deadline)

    def _wait_for_worker(self, method: str, request: bytes, deadline: float | None) -> W:
        """worker_for() under the lock."""
        while True:
            if self._closing:
                raise unloading_error(self.plugin_id, method)
            if self._state is State.FUSED:
                if method in CONFIG_METHODS and request != self._config:
                    self._unfuse()
                else:
                    raise PluginUnavailable(
                        self._fuse.reason or "fused",
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

    def configured(self, request: bytes, timeout: float | None) -> None:
        """The plugin accepted this config: every new worker is given it."""
        with self._cond:
            self._config = bytes(request)
            self._config_timeout = timeout

    # -- what a worker reports (its reader thread) --------------------------------------

    def replace(self, worker: W, reason: str) -> None:
        """Kill a running worker that failed; it shows as restarting from this moment on."""
        with self._cond:
            if worker is self._worker and self._state is State.RUNNING:
                self._state = State.RESTARTING
        worker.kill(reason)

    def worker_died(self, worker: W, failure: str | None, signame: str | None) -> None:
        if failure is not None:
            self._record_failure(failure, signame)

    # -- restarts, the fuse and health --------------------------------------------------

    def _record_failure(self, error: str, signame: str | None) -> None:
        with self._cond:
            blown = self._fuse.record(error, self.plugin_id)
            self._last_error = error
            self._last_signal = signame
            if self._closing:
                return
            if blown:
                self._state = State.FUSED
                self._need_restart = False
                self._last_error = self._fuse.reason
                log.error("%s", self._fuse.reason)
            else:
                self._state = State.RESTARTING
                self._need_restart = True
                log.warning("plugin %s: %s; restarting its worker", self.plugin_id, error)
            self._cond.notify_all()

    def _unfuse(self) -> None:
        log.warning("plugin %s: new config; restarting its fused worker", self.plugin_id)
        self._fuse.reset()
        self._state = State.RESTARTING
        self._need_restart = True
        self._cond.notify_all()

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
        next_ping = time.monotonic() + self.limits.ping_interval_s
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
                next_ping = time.monotonic() + self.limits.ping_interval_s
            except Exception:  # this thread must survive, or workers stop being restarted
                log.exception("plugin %s: supervisor error", self.plugin_id)

    def _next_action(self, next_ping: float) -> Literal["stop", "restart", "ping"]:
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
            delay = self._fuse.backoff()
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
            worker = self._starter.start(self._ids)
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
        worker.wait_loaded(self.limits.start_timeout_s)
        # Before the plugin is RUNNING, not after: its calls then never share the host
        # with a spawn half done (file descriptors, a fork) that they did not ask for.
        self._starter.ahead()
        with self._cond:
            config, timeout = self._config, self._config_timeout
        if config is not None:
            try:
                self._replay(worker, Method.REGISTER.value, config, timeout)
            except WorkerGone:
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
        worker.trim_lines(self.limits.line_idle_s)
        if worker.ping(self.limits.ping_timeout_s):
            return
        reason = (
            f"the worker missed a ping (no answer within {self.limits.ping_timeout_s:g} s), "
            "so it was killed"
        )
        with self._cond:
            if worker is self._worker and self._state is State.RUNNING:
                self._state = State.UNHEALTHY
                self._last_error = reason
                self._cond.notify_all()
        worker.kill(reason)

    def _stop_worker(self) -> None:
        self._starter.discard()
        with self._cond:
            worker = self._worker
            threads = list(self._threads)
        if worker is not None and not worker.dead:
            worker.shut_down(max(0.0, self._close_deadline - time.monotonic()))
        deadline = time.monotonic() + REAP_GRACE + 1.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- closing ------------------------------------------------------------------------

    def close(self, timeout: float) -> None:
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
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout + EXIT_GRACE + REAP_GRACE + 2.0)
