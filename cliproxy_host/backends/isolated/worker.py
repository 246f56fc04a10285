"""The isolated-mode worker process: one plugin loaded with NativePlugin, served over sockets.

Started by the client as `python -m cliproxy_host.backends.isolated.worker --fd N ...`; the
sockets and frames are those of `wire.py`. Nothing else imports this module, so that `-m` runs it
exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import logging
import os
import resource
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final, NoReturn

import orjson

from ...errors import PluginBusy, PluginCallFailed, PluginError, PluginLoadError, ResponseTooLarge
from ...sdk.cpu import spare_cpu
from ..native import NativePlugin
from .core import LineCore, load_core
from .wire import (
    GO,
    HANDSHAKE_ID,
    LINE_BUFFER,
    WAKE_UP_ALLOWANCE_S,
    Channel,
    Kind,
    Latch,
    ProtocolError,
    pack_call,
    pack_error,
    spin_until_readable,
    unpack_call,
)

log = logging.getLogger("cliproxy_host.worker")

PR_SET_PDEATHSIG: Final = 1  # linux/prctl.h
# Call lines arrive close-on-exec (atomically where the flag exists, Linux): nothing the
# plugin spawns may hold one open.
_CMSG_CLOEXEC: Final[int] = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
# How long a line the worker has no thread for waits for its call, to answer it BUSY.
_REFUSE_WAIT_S: Final = 5.0


class _HostWait:
    __slots__ = ("answer", "event")

    def __init__(self) -> None:
        self.event = Latch()
        self.answer = b""


class _Server:
    """Serves one plugin: calls on the host's call lines, a thread each; the rest on the reader.

    The control socket carries the handshake, pings, shutdown and the plugin's host
    calls; its reader never runs plugin code, so a long call never delays a ping. Each
    call line (a socket the host passes over `lines_sock`) carries one call at a time and
    is served by a thread of its own, which runs the call as soon as it reads it.
    """

    def __init__(
        self,
        sock: socket.socket,
        lines_sock: socket.socket,
        *,
        plugin_id: str,
        path: Path,
        max_response: int,
        spin_us: int,
        sha256: str | None = None,
        core: LineCore | None = None,
    ) -> None:
        self.channel = Channel(sock)
        self.spin_us = spin_us
        # Reads the control socket and serves the call lines in C (None: Python does).
        self.core = core
        self._loaded = threading.Event()
        self.spin_s = spin_us / 1e6
        self.lines_sock = lines_sock
        self.plugin_id = plugin_id
        self.path = path
        self.max_response = max_response
        self.sha256 = sha256
        self.plugin: NativePlugin | None = None
        self._host_waits: dict[int, _HostWait] = {}
        self._host_lock = threading.Lock()
        self._host_ids = itertools.count(1)
        self._line_serial = itertools.count(1)
        self._local = threading.local()
        self._pin: ctypes.CDLL | None = None

    def serve(self) -> NoReturn:
        if self.core is not None:
            try:
                self.core.start_control(self.channel.sock.fileno(), self.plugin_id, self._shutdown)
            except OSError as exc:
                log.warning(
                    "worker for plugin %s: %s; serving calls in Python", self.plugin_id, exc
                )
                self.core = None
        # The plugin loads on another thread because its init may call the host, and the
        # answers to those calls arrive through the control socket's reader.
        threading.Thread(target=self._load, name="cliproxy-worker-load", daemon=True).start()
        threading.Thread(
            target=self._accept_lines, name="cliproxy-worker-lines", daemon=True
        ).start()
        if self.core is not None:
            # The core's reader exits the process at EOF; this thread has nothing to do.
            threading.Event().wait()
        try:
            while (frame := self.channel.recv()) is not None:
                self._dispatch(*frame)
        except (OSError, ProtocolError) as exc:
            log.error(
                "worker for plugin %s: connection to the host broken: %s", self.plugin_id, exc
            )
        # EOF: the host closed the socket or died. Nobody is left to answer to.
        _exit(0)

    def _dispatch(self, kind: Kind, request_id: int, payload: bytes) -> None:
        if kind is Kind.PING:
            self._send(Kind.PONG, request_id)
        elif kind is Kind.HOST_RESULT:
            with self._host_lock:
                wait = self._host_waits.pop(request_id, None)
            if wait is not None:
                wait.answer = payload
                wait.event.set()
        elif kind is Kind.SHUTDOWN:
            drain = float(payload or b"0")
            threading.Thread(
                target=self._shutdown, args=(drain,), name="cliproxy-worker-shutdown", daemon=True
            ).start()
        else:
            raise ProtocolError(f"unexpected {kind.name} frame from the host")

    def _accept_lines(self) -> None:
        """Serve each call line the host passes, on a new thread; return at EOF."""
        # The host sends calls only once the plugin is READY: until then a line waits
        # here, so that it is served by the core when there is one.
        self._loaded.wait()
        while True:
            try:
                # A line's socket, and its ring (a memfd) where the core serves lines.
                _, fds, flags, _ = socket.recv_fds(self.lines_sock, 1, 2, _CMSG_CLOEXEC)
            except OSError as exc:
                log.error("worker for plugin %s: cannot take call lines: %s", self.plugin_id, exc)
                return
            if not fds or flags & socket.MSG_CTRUNC:
                # Dropped by the kernel, all or some (out of file descriptors): what came is
                # closed, so the host sees the line hang up before its call was taken and
                # refuses the call as busy, rather than waiting on a ring nobody reads.
                for fd in fds:
                    os.close(fd)
                log.error(
                    "worker for plugin %s: a call line was lost (out of file descriptors?); "
                    "its call is refused as busy",
                    self.plugin_id,
                )
                continue
            if not _CMSG_CLOEXEC:
                for fd in fds:
                    os.set_inheritable(fd, False)
            if self.core is not None:
                err = self.core.serve_line(fds[0], fds[1] if len(fds) > 1 else -1)
                if err:  # refused or closed by the core, which says so to the host
                    log.error(
                        "worker for plugin %s: cannot serve a call line: %s",
                        self.plugin_id,
                        os.strerror(err),
                    )
                continue
            for fd in fds[1:]:  # a ring only the core could serve: the host sends none here
                os.close(fd)
            line = Channel(socket.socket(fileno=fds[0]), buffering=LINE_BUFFER)
            try:
                threading.Thread(
                    target=self._serve_line,
                    args=(line,),
                    name=f"cliproxy-worker-line-{next(self._line_serial)}",
                    daemon=True,
                ).start()
            except RuntimeError as exc:  # no thread to be had, e.g. under memory_limit_mb
                self._refuse_line(line, exc)

    def _serve_line(self, line: Channel) -> None:
        poller = select.poll()
        poller.register(line.sock, select.POLLIN)
        # This thread runs only this line's calls: the plugin's host calls from it travel
        # on the line as well (see _forward).
        self._local.line = (line, poller)
        spin = self.spin_s
        # Poll for the next call only while calls come within the spin time of the last
        # answer: an idle line sleeps.
        quick = False
        answered = float("-inf")
        try:
            while True:
                if quick and spare_cpu():
                    spin_until_readable(poller, spin)
                frame = line.recv()
                if frame is None:
                    break
                kind, request_id, payload = frame
                if kind is not Kind.CALL:
                    raise ProtocolError(f"unexpected {kind.name} frame on a call line")
                method, request = unpack_call(payload)
                quick = time.perf_counter() - answered <= spin + WAKE_UP_ALLOWANCE_S
                self._call(line, request_id, method, request)
                answered = time.perf_counter()
        except (OSError, ProtocolError) as exc:
            log.error("worker for plugin %s: a call line broke: %s", self.plugin_id, exc)
            _exit(1)  # the host must not wait for an answer that cannot come
        line.close()  # closed by the host: idle for too long

    def _refuse_line(self, line: Channel, exc: RuntimeError) -> None:
        """Answer the line's first call BUSY, then close it (the host closes its end too)."""
        with contextlib.suppress(OSError, ProtocolError):
            line.sock.settimeout(_REFUSE_WAIT_S)
            frame = line.recv()
            if frame is not None:
                method, _ = unpack_call(frame[2])
                busy = PluginBusy(
                    f"the worker cannot start a thread for {method} ({exc}); retry later, or "
                    "raise the plugin's memory_limit_mb",
                    retryable=True,
                )
                line.send(Kind.ERROR, frame[1], pack_error(busy))
        line.close()

    def _load(self) -> None:
        try:
            plugin = NativePlugin(self.plugin_id, self.path, self._forward, image=self._image())
        except PluginError as exc:
            self._send(Kind.ERROR, HANDSHAKE_ID, pack_error(exc))
            _exit(0)
        except BaseException as exc:  # the host must hear why, whatever it was
            self._send(
                Kind.ERROR,
                HANDSHAKE_ID,
                pack_error(PluginLoadError(f"the worker failed to load: {exc!r}")),
            )
            _exit(1)
        # A second reference to the library that is never dropped: NativePlugin.close()
        # then cannot unmap code that threads the plugin started are still running while
        # the worker exits (they would fault in unmapped memory). Exit reclaims it.
        mode = os.RTLD_NOW | os.RTLD_LOCAL | getattr(os, "RTLD_NODELETE", 0)
        try:
            self._pin = ctypes.CDLL(str(plugin.load_path), mode=mode)
        except OSError as exc:
            log.warning(
                "worker for plugin %s: could not pin %s: %s", self.plugin_id, self.path, exc
            )
        if self.core is not None:
            self.core.attach(plugin, self.max_response, self.spin_us, self.lines_sock.fileno())
        self.plugin = plugin
        self._loaded.set()
        # "rings": the core serves the lines, and takes a ring (shared memory) with each.
        ready = {"pid": os.getpid(), "rings": self.core is not None}
        self._send(Kind.READY, HANDSHAKE_ID, orjson.dumps(ready))

    def _image(self) -> bytes | None:
        """The file's bytes if the host verified them: read once here, and refused unless
        they are what the host checked (the file may have changed since)."""
        if self.sha256 is None:
            return None
        # Here, not at the top: the trust package costs every worker start ~5 ms to import.
        from ...trust.digest import check_digest, read_image  # noqa: PLC0415

        try:
            data = read_image(self.path)
        except OSError as exc:
            raise PluginLoadError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        check_digest(self.sha256, data, self.path, plugin_id=self.plugin_id, source="verified")
        return data

    def _call(self, line: Channel, request_id: int, method: str, request: bytes) -> None:
        plugin = self.plugin
        try:
            if plugin is None:
                raise PluginCallFailed("the worker has not loaded the plugin yet")
            data = plugin.call(method, request)
            if len(data) > self.max_response:
                # Refused here, before it crosses: the host must never have to take it in.
                raise ResponseTooLarge(
                    f"the response to {method} is {len(data)} bytes, over max_response_bytes "
                    f"({self.max_response}); answer less, or raise the plugin's limit",
                )
        except PluginError as exc:
            line.send(Kind.ERROR, request_id, pack_error(exc))
        except Exception as exc:  # e.g. MemoryError under memory_limit_mb
            err = PluginCallFailed(f"the worker could not run {method}: {exc!r}")
            line.send(Kind.ERROR, request_id, pack_error(err))
        else:
            line.send(Kind.RESULT, request_id, data)

    def _forward(self, plugin_id: str, method: str, request: bytes) -> bytes:
        """The plugin's host->call, from any of its threads: ask the host and wait.

        What this raises (the host is gone) is answered by NativePlugin's trampoline, the
        answer gate of this process.
        """
        if self.core is not None:
            return self.core.host_call(method, request)
        request_id = next(self._host_ids)
        on_line: tuple[Channel, select.poll] | None = getattr(self._local, "line", None)
        if on_line is not None:
            line, poller = on_line
            return self._forward_on_line(line, poller, request_id, method, request)
        wait = _HostWait()
        with self._host_lock:
            self._host_waits[request_id] = wait
        try:
            self.channel.send(Kind.HOST_CALL, request_id, *pack_call(method, request))
        except OSError:
            with self._host_lock:
                self._host_waits.pop(request_id, None)
            raise
        # No timeout: the host answers every host call, or dies and the worker with it.
        wait.event.wait()
        return wait.answer

    def _forward_on_line(
        self, line: Channel, poller: select.poll, request_id: int, method: str, request: bytes
    ) -> bytes:
        """A host call from a thread running a call: on that call's line, whose host end
        is the caller waiting for the answer; it answers, then goes on waiting."""
        try:
            line.send(Kind.HOST_CALL, request_id, *pack_call(method, request))
            if self.spin_s and spare_cpu():
                spin_until_readable(poller, self.spin_s)
            frame = line.recv()
        except (OSError, ProtocolError) as exc:
            log.error("worker for plugin %s: a call line broke: %s", self.plugin_id, exc)
            _exit(1)
        if frame is None or frame[0] is not Kind.HOST_RESULT or frame[1] != request_id:
            # The host gave up on the call (it closes a line only then), or broke the
            # protocol: either way nobody waits for this call's answer any more.
            log.error(
                "worker for plugin %s: no answer to %s on its call line (%s)",
                self.plugin_id,
                method,
                "closed" if frame is None else f"{frame[0].name} {frame[1]}",
            )
            _exit(1)
        return frame[2]

    def _send(self, kind: Kind, request_id: int, *parts: bytes) -> None:
        # OSError: the host is gone; the reader sees EOF and the worker exits.
        with contextlib.suppress(OSError):
            if self.core is not None:
                self.core.send(kind, request_id, b"".join(parts))
            else:
                self.channel.send(kind, request_id, *parts)

    def _shutdown(self, drain: float) -> None:
        if self.core is not None and not self.core.drain(drain):
            # Calls still running: as NativePlugin defers closing to the last of them,
            # and the worker exits before that, the plugin is not shut down.
            _exit(0)
        if self.plugin is not None:
            self.plugin.close(timeout=drain)
        _exit(0)


def _exit(status: int) -> NoReturn:
    # os._exit, not sys.exit: plugin threads may be blocked anywhere, and interpreter
    # teardown would wait for or trip over them.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def die_with_parent(parent_pid: int) -> None:
    """Make this process die when its host does, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    # The host may have died before prctl took effect; then we were re-parented already.
    # Elsewhere this is the only early check; EOF on the socket covers the rest.
    if os.getppid() != parent_pid:
        _exit(0)


def apply_limits(memory_limit_mb: int | None, cpu_limit_s: int | None) -> None:
    if memory_limit_mb is not None:
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_limit_s is not None:
        # Past the soft limit the kernel sends SIGXCPU (the host reports it as the crash
        # signal); the hard limit a second later is SIGKILL, for a plugin that catches it.
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = cpu_limit_s if hard == resource.RLIM_INFINITY else min(cpu_limit_s, hard)
        new_hard = soft + 1 if hard == resource.RLIM_INFINITY else min(soft + 1, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, new_hard))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cliproxy_host.backends.isolated.worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--lines-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--plugin-id", required=True)
    parser.add_argument("--path", type=Path, required=True)
    parser.add_argument("--max-response-bytes", type=int, required=True)
    parser.add_argument("--spin-us", type=int, default=0)
    parser.add_argument("--memory-limit-mb", type=int)
    parser.add_argument("--cpu-limit-s", type=int)
    parser.add_argument("--sha256")
    parser.add_argument("--line-core", type=Path)
    parser.add_argument("--standby", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = _parse(argv)
    die_with_parent(args.parent_pid)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    sock = socket.socket(fileno=args.fd)
    lines_sock = socket.socket(fileno=args.lines_fd)
    # Not inherited by anything the plugin spawns: a grandchild holding the socket open
    # would hide this worker's death (EOF) from the host.
    os.set_inheritable(sock.fileno(), False)
    os.set_inheritable(lines_sock.fileno(), False)
    core = None if args.line_core is None else load_core(args.line_core, args.plugin_id)
    if args.standby:
        _await_go(sock)
    apply_limits(args.memory_limit_mb, args.cpu_limit_s)
    _Server(
        sock,
        lines_sock,
        plugin_id=args.plugin_id,
        path=args.path,
        max_response=args.max_response_bytes,
        spin_us=args.spin_us,
        sha256=args.sha256,
        core=core,
    ).serve()


def _await_go(sock: socket.socket) -> None:
    """A standby worker, all imported: wait until the host needs it (GO), or exit (EOF)."""
    try:
        go = sock.recv(len(GO))
    except OSError:
        go = b""
    if go != GO:  # the host discarded it, or is gone
        _exit(0)


if __name__ == "__main__":
    main()
