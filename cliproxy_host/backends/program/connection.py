"""One plugin program on one connection: its hello, its calls in flight, its host calls, its death.

A `Worker` for the isolated mode's `Supervisor`, which restarts it, fuses it, pings it
and shuts it down exactly as it does a worker process. Unlike a worker, a program runs
many calls at once on its one connection, so a call that overruns its timeout is
abandoned (its late answer dropped) rather than killing the program and every other
call with it; a program that hangs as a whole misses its heartbeat and is killed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, Final, Protocol

import orjson

from ...abi import Method
from ...errors import (
    AbiVersionMismatch,
    HandshakeRefused,
    PluginBusy,
    PluginCallFailed,
    PluginCrashed,
    PluginError,
    PluginLoadError,
    PluginTimeout,
)
from ...sdk.cpu import spare_cpu
from ..isolated.limits import IsolationLimits
from ..isolated.process import (
    EXIT_GRACE,
    PING,
    REAP_GRACE,
    Pending,
    RequestTable,
    WorkerGone,
    describe_exit,
    died_where,
    unloaded_while,
)
from ..isolated.spawn import forward_output
from . import rpc
from .launch import ProgramCommand, start
from .listener import Arrival

log = logging.getLogger(__name__)

# Host calls a program may have waiting at once; more are answered plugin_busy at once,
# so a flood costs the host a bounded number of threads.
MAX_HOST_CALLS: Final = 64
# A program that reads nothing for this long while the host writes to it is killed.
SEND_TIMEOUT_S: Final = 10.0
# The reader thread reads once no caller has waited for this long (callers read for
# themselves meanwhile): a host call from one of the program's own threads between two
# calls waits at most this much longer to be read.
_QUIET_S: Final = 0.001
_IDLE_POLL_S: Final = 0.05  # how often an idle reader thread looks whether callers came
# After polls that missed one after another, a method's answer is not polled for during
# the next 0, 1, 3, 7, ... calls (at most this many): a slow method is slept on, not burnt
# CPU on, and a quick one missed now and then is polled for again at once.
_SPIN_RETRY: Final = 32
# The reader thread dozes (woken when the last caller leaves) once no call has ended
# for this long, instead of looking every _QUIET_S.
_DOZE_AFTER_S: Final = 0.1
_DOZE_S: Final = 1.0  # how long it dozes at most before it looks again anyway
# A caller waiting in recv() for its answer looks at its deadline this often.
_RECEIVE_STEP_S: Final = 0.02


class _Call(Pending):
    """A request waiting for its answer; `done` is what the thread reading for it checks
    between lines (no lock: it is set after the answer, by a thread holding the turn)."""

    __slots__ = ("done",)

    def __init__(self, method: str | None) -> None:
        super().__init__(method)
        self.done = False

    def resolve(self, data: bytes) -> None:
        self.data = data
        self.done = True
        self.event.set()

    def fail(self, error: PluginError) -> None:
        self.error = error
        self.done = True
        self.event.set()


class Owner(Protocol):
    """What a connection reports to its supervisor (from its reader thread)."""

    def replace(self, worker: ProgramConnection, reason: str) -> None: ...

    @property
    def host_call(self) -> Callable[[ProgramConnection, int, str, bytes], None]: ...

    def worker_died(
        self, worker: ProgramConnection, failure: str | None, signame: str | None
    ) -> None: ...


class ProgramConnection(RequestTable):
    """A plugin program's connection: to a program the host started (`launch`), or to one
    started elsewhere that connected to plugins.socket (`attach`)."""

    @classmethod
    def launch(
        cls,
        plugin_id: str,
        command: ProgramCommand,
        limits: IsolationLimits,
        ids: itertools.count[int],
        owner: Owner,
    ) -> ProgramConnection:
        proc, sock, output = start(plugin_id, command, limits)
        label = f"plugin program {' '.join(command.argv)!r} (pid {proc.pid})"
        return cls(plugin_id, limits, ids, owner, sock=sock, label=label, proc=proc, output=output)

    @classmethod
    def attach(
        cls,
        plugin_id: str,
        arrival: Arrival,
        limits: IsolationLimits,
        ids: itertools.count[int],
        owner: Owner,
    ) -> ProgramConnection:
        label = f"plugin program {plugin_id} on plugins.socket ({arrival.peer})"
        arrival.lines.limit = limits.max_response_bytes + rpc.LINE_SLACK
        return cls(
            plugin_id,
            limits,
            ids,
            owner,
            sock=arrival.sock,
            label=label,
            lines=arrival.lines,
            first=arrival.hello,
        )

    def __init__(
        self,
        plugin_id: str,
        limits: IsolationLimits,
        ids: itertools.count[int],
        owner: Owner,
        *,
        sock: socket.socket,
        label: str,
        proc: subprocess.Popen[bytes] | None = None,
        output: IO[bytes] | None = None,
        lines: rpc.Lines | None = None,
        first: rpc.Message | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.label = label
        self.owner = owner
        self.ids = ids
        self.lock = threading.Lock()
        self._send_lock = threading.Lock()
        self.hello = Pending(None)
        self.pending: dict[int, Pending] = {}
        self.dead = False
        self.ready = False  # rpc.hello accepted
        self._greeted = False  # rpc.hello answered, accepted or not
        self.stopping = False
        self.kill_reason: str | None = None
        self.max_line = limits.max_response_bytes + rpc.LINE_SLACK
        self._spin_s = limits.spin_us / 1e6
        # Per method: polls missed in a row, and calls left before polling again.
        self._missed: dict[str | None, tuple[int, int]] = {}
        self._host_calls = 0

        self.proc = proc
        self.sock = sock
        self._first = first  # an rpc.hello read already (by the plugins.socket listener)
        rpc.set_send_timeout(sock, SEND_TIMEOUT_S)
        rpc.set_receive_step(sock, _RECEIVE_STEP_S)
        self._lines = lines or rpc.Lines(sock, self.max_line)
        # The read turn: whoever holds it reads lines and dispatches them all. Callers
        # waiting for answers take turns (one reads, the others wait on _cond until their
        # answer is in or the turn is free), so an answer is read by the thread that
        # waits for it, without a hand-off. The reader thread reads only while no one
        # waits (host calls from the program's own threads, its end).
        self._turn = threading.Lock()
        waits = threading.Lock()
        self._cond = threading.Condition(waits)
        # The reader thread waits on this one (same lock), in steps of _QUIET_S: it must
        # not wake at every answer a caller reads, nor whenever the last caller leaves.
        self._quiet = threading.Condition(waits)
        self._waiting = 0  # callers waiting for an answer (under self.lock)
        self._broken = False  # it broke the protocol: it is being killed
        self._quiet_since = time.monotonic()
        self._dozing = False  # the reader thread waits for the last caller to leave
        name = f"cliproxy-program-{plugin_id}"
        self.reader = threading.Thread(target=self._read, name=name, daemon=True)
        self._threads = [self.reader]
        if proc is not None and output is not None:
            self._threads.append(
                threading.Thread(
                    target=forward_output, args=(output, plugin_id), name=f"{name}-out", daemon=True
                )
            )
            self._threads.append(
                threading.Thread(
                    target=self._watch_exit, args=(proc,), name=f"{name}-exit", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        return tuple(self._threads)

    @property
    def usable(self) -> bool:
        return not self.dead and self.kill_reason is None

    # -- its life ---------------------------------------------------------------------

    def wait_loaded(self, timeout_s: float) -> None:
        """Wait for an accepted rpc.hello; raise why not, killing a program that is silent."""
        if not self.hello.event.wait(timeout_s):
            self.kill(
                f"{self._program()} did not send rpc.hello within {timeout_s:g} s; "
                "it was killed (a plugin program greets the host first, see docs/PROTOCOL.md)"
            )
            self.hello.event.wait()
        if self.hello.error is not None:
            self.join(REAP_GRACE + 1.0)
            raise self.hello.error

    def ping(self, timeout_s: float) -> bool:
        """The heartbeat: False if the program did not answer rpc.ping in time."""
        registered = self.add(_Call(PING))
        if registered is None:
            return True
        request_id, pending = registered
        if not self._send(rpc.request(request_id, rpc.PING, b"{}")):
            return True
        return pending.event.wait(timeout_s) or self.take(request_id) is None

    def trim_lines(self, idle_s: float) -> None:
        """Nothing to trim: a program has one connection."""

    def shut_down(self, drain: float) -> None:
        """plugin.shutdown (answered within `drain` plus a grace), then the end of the
        connection, which the program takes as the order to exit; killed if it stays."""
        self.stopping = True
        if self.ready:
            with contextlib.suppress(PluginError, WorkerGone):
                self.call(Method.SHUTDOWN.value, b"{}", drain + EXIT_GRACE)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.reader.join(EXIT_GRACE)
        if self.reader.is_alive():
            self.kill(f"{self._program()} did not exit within {EXIT_GRACE:g} s of shutdown")

    def kill(self, reason: str) -> None:
        with self.lock:
            if self.kill_reason is None:
                self.kill_reason = reason
        if self.proc is None:  # not ours to kill: the connection ends, and the reader with it
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # -- calls ------------------------------------------------------------------------

    def call(
        self, method: str, request: bytes, timeout: float | None, budget: float | None = None
    ) -> bytes:
        """One plugin method; WorkerGone if the request never reached the program.

        `budget` is the call's whole timeout for the message (`timeout` is what is left)."""
        pending = _Call(method)
        with self.lock:
            if self.dead or self.kill_reason is not None:
                raise WorkerGone
            request_id = next(self.ids)
            self.pending[request_id] = pending
            self._waiting += 1  # counted before it is sent: the reader thread leaves it be
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if not self._send(rpc.request(request_id, method, request)):
                self.take(request_id)
                raise WorkerGone
            self._await(pending, deadline)
        finally:
            with self.lock:
                self._waiting -= 1
                last = not self._waiting
                if last:
                    self._quiet_since = time.monotonic()
            if last and self._dozing:  # after a long call: the reader thread reads now
                self._notify_reader()
        # Not answered yet: the program is going (the reader thread fails the call when it
        # buries it), or the deadline passed.
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not pending.done and not pending.event.wait(left):
            if self.take(request_id) is not None:
                raise PluginTimeout(
                    f"plugin {self.plugin_id} did not answer {method} within "
                    f"{budget or timeout:g} s; "
                    "the call was abandoned (the program runs on; its heartbeat tells "
                    "whether it hangs)",
                    plugin_id=self.plugin_id,
                    method=method,
                )
            pending.event.wait()
        if pending.error is not None:
            raise pending.error
        return pending.data

    def _await(self, pending: _Call, deadline: float | None) -> None:
        """Wait for an answer until `deadline`, reading it on this thread whenever the
        turn is free; back early if the program is going."""
        turn, lines = self._turn, self._lines
        while not pending.done:
            if deadline is not None and time.monotonic() >= deadline:
                return
            if lines.eof:
                return  # the reader thread buries the program and fails its calls
            if turn.acquire(blocking=False):
                try:
                    self._pump(pending, deadline)
                except rpc.ProtocolViolation as exc:
                    self._broke(exc)
                    return
                except OSError:
                    return  # the program is going: the reader thread buries it
                finally:
                    turn.release()
                    self._wake()
                continue
            left = None if deadline is None else deadline - time.monotonic()
            with self._cond:
                self._cond.wait_for(lambda: pending.done or not turn.locked(), left)

    def _wake(self, *, always: bool = False) -> None:
        """Callers waiting for the turn or their answer look again."""
        # A caller counts itself before it tries the turn, so one that is not counted yet
        # finds the turn free and needs no notice; most calls have no other caller. The
        # reader thread and a dying program notify always: then every waiter is another.
        if always or self._waiting > 1:
            with self._cond:
                self._cond.notify_all()

    def answer_host(self, request_id: int, answer: bytes) -> None:
        """The host's answer envelope to one of the program's host calls."""
        with self.lock:
            self._host_calls -= 1
        self._send(rpc.result(request_id, answer))

    def _send(self, line: bytes) -> bool:
        """Write one line; False (and the program killed) when it cannot be written."""
        try:
            with self._send_lock:
                self.sock.sendall(line)
        except OSError as exc:
            if self.usable and not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                self.kill(f"{self._program()} stopped reading its socket ({exc}); it was killed")
            return False
        return True

    # -- the connection (its reader thread) -------------------------------------------

    def _watch_exit(self, proc: subprocess.Popen[bytes]) -> None:
        """When the program exits: kill what it left in its group, end the connection."""
        if hasattr(os, "waitid"):
            # Exited but not reaped yet: its pid, the group's ID, cannot be reused.
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _read(self) -> None:
        try:
            if self._first is not None:
                self._dispatch(self._first)
            while not self._lines.eof:
                self._idle()
                if not self._lines.readable_apart(_IDLE_POLL_S):
                    continue
                with self._cond:
                    if self._waiting:
                        continue  # a caller reads it
                with self._turn:
                    self._pump(None, None)
                self._wake(always=True)
        except rpc.ProtocolViolation as exc:
            self._broke(exc)
        except OSError:
            pass  # reset by a dying program
        self.owner.worker_died(self, *self._bury())

    def _idle(self) -> None:
        """Wait until no caller has waited for _QUIET_S: they read while they wait.

        While calls come and go, it looks again every _QUIET_S rather than being woken
        when the last caller leaves: between two calls of a busy caller that wake-up (and
        the reader thread's taking the GIL) would cost the next call more than the call
        itself. While only long calls wait (none ended for _DOZE_AFTER_S), it dozes, and
        the last caller to leave wakes it."""
        with self._cond:
            while not self._lines.eof:
                quiet = time.monotonic() - self._quiet_since
                if not self._waiting:
                    if quiet >= _QUIET_S:
                        return
                    self._quiet.wait(_QUIET_S - quiet)
                elif quiet < _DOZE_AFTER_S:
                    self._quiet.wait(_QUIET_S)
                else:
                    # Said before it looks again: a caller leaving after this look sees it
                    # and wakes it (its notify waits for this wait to take the lock).
                    self._dozing = True
                    try:
                        if self._waiting and time.monotonic() - self._quiet_since >= _DOZE_AFTER_S:
                            self._quiet.wait(_DOZE_S)
                    finally:
                        self._dozing = False

    def _notify_reader(self) -> None:
        with self._cond:
            self._quiet.notify_all()

    def _pump(self, until: _Call | None, deadline: float | None) -> None:
        """With the turn: dispatch every whole line, reading more until `until` is answered
        or `deadline` passes; without `until`, only what the socket has now."""
        lines = self._lines
        spin = until is not None and self._spin_s > 0 and self._should_spin(until.method)
        while True:
            line = lines.next_line()
            if line is not None:
                if line.strip():
                    self._take_line(line)
                continue
            if lines.eof:
                return
            if until is None:
                if not lines.readable(0.0) or not lines.fill():
                    return
                continue
            if until.done or (deadline is not None and time.monotonic() >= deadline):
                return
            if spin:  # once: the answer of a quick method comes within microseconds
                spin = False
                if lines.spin(self._spin_s):
                    self._missed.pop(until.method, None)
                else:
                    row = self._missed.get(until.method, (0, 0))[0] + 1
                    self._missed[until.method] = (row, min(_SPIN_RETRY, (1 << row - 1) - 1))
            if not lines.fill_within(deadline):
                return

    def _take_line(self, line: bytes) -> None:
        """Dispatch one line; an answer to a call (the common case) without the detour."""
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError:
            body = None
        if (
            type(body) is dict
            and "result" in body
            and body.get("error") is None
            and "method" not in body
            and type(body.get("id")) is int
            and self.ready
        ):
            self._answered_ok(body["id"], body["result"])
        else:
            self._dispatch(rpc.parse(line))  # anything else, and what is wrong with it

    def _should_spin(self, method: str | None) -> bool:
        """Poll for this method's answer: when its last poll found it (or it is due for
        another try) and a CPU is spare for it."""
        missed = self._missed.get(method)
        if missed is not None and missed[1]:
            self._missed[method] = (missed[0], missed[1] - 1)
            return False
        return spare_cpu()

    def _answered_ok(self, request_id: int, result: object) -> None:
        if self._broken:
            return
        with self.lock:
            pending = self.pending.pop(request_id, None)
        if pending is not None:  # else the answer to a call that was abandoned: dropped
            pending.resolve(orjson.dumps(result))
            if self._waiting > 1:
                self._wake()

    def _broke(self, exc: rpc.ProtocolViolation) -> None:
        self._broken = True  # nothing it sends after counts, not even answers
        self.owner.replace(self, f"{self._program()} broke the protocol: {exc}; it was killed")

    def _dispatch(self, message: rpc.Message) -> None:
        if self._broken:
            return
        if not self.ready:
            self._greet(message)
        elif message.method is None:
            self._answered(message)
        elif message.id is None:
            pass  # a notification: nothing of the protocol is one yet; ignored
        elif message.method.startswith("host."):
            self._host_call(message.id, message.method, message.params)
        else:
            self._send(
                rpc.error(
                    message.id, rpc.METHOD_NOT_FOUND, f"the host has no method {message.method}"
                )
            )

    def _greet(self, message: rpc.Message) -> None:
        if message.method != rpc.HELLO or message.id is None:
            what = message.method or f"a response to {message.id}"
            raise rpc.ProtocolViolation(f"its first message must be rpc.hello, not {what}")
        problem = rpc.hello_problem(message.params, self.plugin_id, None)
        if problem is not None:
            self._send(rpc.error(message.id, rpc.INVALID_REQUEST, problem))
            cls = AbiVersionMismatch if "version" in problem else HandshakeRefused
            self._greeted = True
            self.hello.fail(cls(f"{self._program()}: {problem}", plugin_id=self.plugin_id))
            self.kill(f"its rpc.hello was refused: {problem}")
            return
        self.ready = self._greeted = True  # before the answer: the program may call at once
        self._send(rpc.result(message.id, rpc.hello_answer(self.plugin_id)))
        self.hello.resolve(b"")

    def _answered(self, message: rpc.Message) -> None:
        assert message.id is not None  # parse() gives every response an id
        pending = self.take(message.id)
        if pending is None:
            return  # the answer to a call that was abandoned: dropped
        try:
            self._resolve(pending, message)
        finally:
            self._wake()

    def _resolve(self, pending: Pending, message: rpc.Message) -> None:
        if message.error is not None:
            pending.fail(
                PluginCallFailed(
                    f"plugin {self.plugin_id} answered {pending.method} with a protocol "
                    f"error {message.error.get('code')}: {message.error.get('message')}",
                    plugin_id=self.plugin_id,
                    method=pending.method,
                )
            )
            return
        pending.resolve(orjson.dumps(message.result))

    def _host_call(self, request_id: int, method: str, params: object) -> None:
        if not isinstance(params, dict):
            answer = PluginCallFailed(
                f"{method} params must be a JSON object (the ABI's request envelope)",
                plugin_id=self.plugin_id,
                method=method,
            ).to_envelope()
            self._send(rpc.result(request_id, answer))
            return
        with self.lock:
            busy = self._host_calls >= MAX_HOST_CALLS
            if not busy:
                self._host_calls += 1
        if busy:
            refusal = PluginBusy(
                f"plugin {self.plugin_id} has {MAX_HOST_CALLS} host calls waiting already; "
                "wait for their answers before sending more",
                plugin_id=self.plugin_id,
                method=method,
            )
            self._send(rpc.result(request_id, refusal.to_envelope()))
            return
        self.owner.host_call(self, request_id, method, orjson.dumps(params))

    def _bury(self) -> tuple[str | None, str | None]:
        """Reap the program and fail what waited on it: why it died, if that counts."""
        with self.lock:
            self.dead = True
            pending = [*self.pending.values()]
            if not self._greeted:
                pending.append(self.hello)
            self.pending.clear()
        how, signame = "disconnected", None
        if self.proc is not None:
            try:
                returncode = self.proc.wait(REAP_GRACE)
            except subprocess.TimeoutExpired:
                self.kill("it closed its socket but kept running; it was killed")
                returncode = self.proc.wait()
            how, signame = describe_exit(returncode)
        self.sock.close()
        reason = self.kill_reason
        for item in pending:
            item.fail(self._death_error(item.method, how, reason))
        self._wake(always=True)
        if self.stopping or not self.ready:
            return None, signame
        return reason or f"{self._program()} {how} {died_where(pending)}", signame

    def _death_error(self, method: str | None, how: str, reason: str | None) -> PluginError:
        if self.stopping:
            return unloaded_while(self.plugin_id, method)
        if method is None:
            return PluginLoadError(
                f"{self._program()} stopped before its rpc.hello was accepted: {reason or how}",
                plugin_id=self.plugin_id,
            )
        message = f"plugin {self.plugin_id} ({self._program()}) {how} in {method}"
        if reason:
            message = f"plugin {self.plugin_id} lost its program in {method}: {reason}"
        return PluginCrashed(message, plugin_id=self.plugin_id, method=method)

    def _program(self) -> str:
        return self.label
