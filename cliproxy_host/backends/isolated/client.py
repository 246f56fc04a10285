"""IsolatedPlugin: a plugin in a worker process, called over call lines, with overruns killed.

The worker (`worker.py`) loads the library with NativePlugin and serves it; the
supervisor (`supervisor.py`) keeps a worker running; how calls and host calls travel, and
the frames: see `wire.py`. This side sends each call on a call line of its own and reads
the answer on the caller's thread, answering the plugin's host calls from that call as
they come. A call that outlasts the timeout the guard hands it costs the worker: a native
call cannot be interrupted, so the process running it is killed and restarted.

Frames from the worker (responses and the plugin's host-call requests alike) are capped
at max_response_bytes plus a little: a larger length means a broken worker.
"""

from __future__ import annotations

import contextlib
import time
from functools import partial
from pathlib import Path

from ...abi import HostHandler
from ...errors import PluginBusy, PluginCrashed, PluginTimeout
from ...gate import gated
from ...sdk.cpu import CPUS, spare_cpu
from ..pool import HOST_CALL_THREADS, DaemonPool
from ..protocol import DEFAULT_DRAIN_TIMEOUT, Health
from .limits import IsolationLimits
from .process import REAP_GRACE, Pending, WorkerGone, WorkerProcess, frame_fault
from .supervisor import Supervisor, library_starts, unloading_error
from .wire import (
    METHOD_CACHE_MAX,
    SPIN_STRETCH_S,
    CallLine,
    Kind,
    NotSent,
    ProtocolError,
    unpack_call,
    unpack_error,
)

__all__ = ["IsolatedPlugin", "IsolationLimits"]


def poll_time(spin_s: float, took: float | None) -> float:
    """How long a caller polls for the answer to a method whose last call took `took`
    seconds (None: never called), while a CPU is spare.

    The spin time, or half as long again as the method's last call took (its answer has
    to cross too), up to SPIN_STRETCH_S more than the spin time: a sleeping caller is
    woken late on a virtual machine (~50 us to wake an idle CPU), which a 50 us method
    would pay on every call. A method slower than that is slept on (0), not burnt CPU on.
    """
    if took is None or spin_s <= 0:
        return spin_s
    cap = spin_s + SPIN_STRETCH_S
    return 0.0 if took > cap else min(cap, max(spin_s, took * 1.5))


class IsolatedPlugin:
    """A plugin library in a worker process; a PluginBackend. Thread-safe."""

    # A call that overruns its timeout is ended by killing the worker that runs it.
    ends_overruns = True

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
        self._took: dict[str, float] = {}  # seconds each method's last call took
        # Wrapped once: host calls are answered with an envelope whatever the handler does.
        self._answer_host = gated(handler)
        # Host calls from the plugin's own threads (those from a call come on its line).
        self._host_calls = DaemonPool(
            f"cliproxy-isolated-{plugin_id}-host", soft_max=HOST_CALL_THREADS
        )
        self._supervisor = Supervisor(
            plugin_id,
            path,
            self._limits,
            self._replay,
            self._host_call,
            answer_host=partial(self._answer_host, plugin_id),
            starter=library_starts,
        )
        try:
            self._supervisor.start()
        except BaseException:
            self._host_calls.close(0.0)
            raise

    def call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        """Send a request envelope; answer the plugin's response envelope bytes.

        `timeout` bounds the whole call, waiting for a restarting worker included: a call
        the worker is still running then has its worker killed, and raises PluginTimeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        supervisor = self._supervisor
        try:
            worker = supervisor.begin(method, request, deadline)
            while True:
                try:
                    return self._exchange(worker, method, request, timeout, deadline)
                except WorkerGone:
                    worker = supervisor.worker_for(method, request, deadline)
        finally:
            supervisor.leave()

    def configured(self, request: bytes, timeout: float | None) -> None:
        self._supervisor.configured(request, timeout)

    def _host_call(
        self, worker: WorkerProcess, request_id: int, method: str, request: bytes
    ) -> None:
        try:
            # Not on the worker's reader thread: a callback may block (HTTP) or call the
            # plugin again, whose answer that thread has to read.
            self._host_calls.submit(lambda: self._answer(worker, request_id, method, request))
        except RuntimeError:  # closed: the plugin is gone as far as the host knows
            answer = unloading_error(self.plugin_id, method).to_envelope()
            with contextlib.suppress(OSError):
                worker.channel.send(Kind.HOST_RESULT, request_id, answer)

    def _answer(self, worker: WorkerProcess, request_id: int, method: str, request: bytes) -> None:
        answer = self._answer_host(self.plugin_id, method, request)
        with contextlib.suppress(OSError):  # the worker is gone; its reader handles that
            worker.channel.send(Kind.HOST_RESULT, request_id, answer)

    def _replay(
        self, worker: WorkerProcess, method: str, request: bytes, timeout: float | None
    ) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._exchange(worker, method, request, timeout, deadline)

    def _exchange(
        self,
        worker: WorkerProcess,
        method: str,
        request: bytes,
        timeout: float | None,
        deadline: float | None,
    ) -> bytes:
        """One call on a line of `worker`; WorkerGone if it never reached the worker.

        Kept in one function despite its length: this is the path of every call.
        """
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        started_call = worker.start_call(method, remaining)
        if started_call is None:
            raise WorkerGone
        request_id, pending, line = started_call
        # Each call in flight keeps a CPU busy in the worker, and a caller that polls takes
        # another: callers poll only while the calls in flight leave CPUs for it.
        spin = (
            poll_time(self._spin_s, self._took.get(method))
            if spare_cpu() and 2 * self._supervisor.inflight <= CPUS
            else 0.0
        )
        started = time.perf_counter()
        # The request stays registered while it runs: if the worker dies, its reader fails
        # it with the reason, whichever thread notices first.
        try:
            try:
                frame = line.call(request_id, method, request, remaining, spin)
            except NotSent:
                # The line hung up before the worker took the call, so it never ran: if
                # the worker is gone (its reader fails the call), the next one may run it.
                line.close()
                if pending.event.wait(REAP_GRACE) or worker.take(request_id) is None:
                    raise WorkerGone from None
                raise PluginBusy(
                    f"the worker of plugin {self.plugin_id} could not take a call line for "
                    f"{method} (out of memory or file descriptors?); retry later, or raise its "
                    "memory_limit_mb or the open-file limit (ulimit -n) the host starts with",
                    plugin_id=self.plugin_id,
                    method=method,
                    retryable=True,
                ) from None
            # The plugin's host calls from the thread running this call come on this line
            # too, and are answered here, on the caller's thread: no hand-off either way.
            while frame is not None and frame[0] is Kind.HOST_CALL:
                host_method, host_request = unpack_call(frame[2])
                answer = self._answer_host(self.plugin_id, host_method, host_request)
                left = None if deadline is None else deadline - time.monotonic()
                # The plugin goes on at once with what it was answered: its next frame
                # (another host call, or the result) is worth polling for.
                spin = self._spin_s if spare_cpu() else 0.0
                frame = line.answer(frame[1], answer, left, spin)
        except TimeoutError:
            return self._timed_out(worker, request_id, pending, method, line, timeout=timeout)
        except ProtocolError as exc:
            # The worker is replaced before the line is closed: a worker whose line closes
            # under a call exits, and would otherwise die for a reason that is not the one.
            self._supervisor.replace(worker, frame_fault(exc, self._limits.max_response_bytes))
            line.close()
            return self._lost(worker, pending, method)
        except OSError:  # ECONNRESET and the like: the worker died mid-write
            frame = None
        if frame is None:
            line.close()
            return self._lost(worker, pending, method)
        kind, answered, payload = frame
        if self._spin_s and (method in self._took or len(self._took) < METHOD_CACHE_MAX):
            # The method is judged by the time the worker measured it took, where it says:
            # a call that had to wake a sleeping end took longer than its method.
            took = line.plugin_took()
            self._took[method] = time.perf_counter() - started if took is None else took
        if kind is Kind.RESULT and answered == request_id:
            # Answered: a worker dying from now on cannot fail the call any more.
            worker.finish_call(request_id, line)
            return payload
        worker.take(request_id)
        if answered != request_id or kind is not Kind.ERROR:
            self._supervisor.replace(
                worker, f"the worker answered call {request_id} with {kind.name} {answered}"
            )
            line.close()
            raise PluginCrashed(
                f"plugin {self.plugin_id} lost its worker in {method}: it broke the frame protocol",
                plugin_id=self.plugin_id,
                method=method,
            )
        error = unpack_error(payload, plugin_id=self.plugin_id, method=method)
        if isinstance(error, PluginBusy):
            line.close()  # the worker had no thread for this line and closed its end
        else:
            worker.finish_call(request_id, line)
        raise error

    def _timed_out(
        self,
        worker: WorkerProcess,
        request_id: int,
        pending: Pending,
        method: str,
        line: CallLine,
        *,
        timeout: float | None,
    ) -> bytes:
        # Taken and replaced before the line is closed: a worker whose line closes under
        # a call exits by itself, and its death would be taken for a crash.
        if worker.take(request_id) is None:
            line.close()
            return self._lost(worker, pending, method)  # it died as the time ran out
        # A native call cannot be interrupted; killing its process is the only way.
        waited = timeout or 0.0  # only a timed call's line times out
        self._supervisor.replace(
            worker, f"{method} did not answer within {waited:g} s, so the worker was killed"
        )
        line.close()
        raise PluginTimeout(
            f"plugin {self.plugin_id} did not answer {method} within {waited:g} s; its "
            "worker was killed and is being restarted",
            plugin_id=self.plugin_id,
            method=method,
        )

    def _lost(self, worker: WorkerProcess, pending: Pending, method: str) -> bytes:
        """The line broke: the worker is dying, and its reader fails the call with why."""
        if not pending.event.wait(REAP_GRACE * 2 + 1.0):
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

    def health(self) -> Health:
        return self._supervisor.health()

    def close(self, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Refuse new calls, drain those in flight (bounded), shut the plugin down, exit."""
        self._supervisor.close(timeout)
        self._host_calls.close(REAP_GRACE)

    def __repr__(self) -> str:
        return f"IsolatedPlugin({self.plugin_id!r}, {str(self.path)!r})"
