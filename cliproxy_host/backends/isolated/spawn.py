"""How a worker process is started: its command line, environment, sockets and output."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Final

from . import core_build
from .limits import IsolationLimits

_LINE_LIMIT: Final = 64 * 1024
# A started worker: the process, the host's ends of its control and call-line sockets,
# and its stdout/stderr to read.
Spawned = tuple[subprocess.Popen[bytes], socket.socket, socket.socket, IO[bytes]]


def spawn(plugin_id: str, path: Path, limits: IsolationLimits, *, standby: bool = False) -> Spawned:
    """Start a worker for the plugin: the process, the host's ends of its control socket
    and of the socket new call lines go over, and its stdout/stderr to read.

    A standby worker imports what it needs, then waits for GO on its control socket
    before it loads the plugin (or exits at EOF): started ahead, it makes a restart
    cost the plugin's load rather than an interpreter's start (see supervisor.py).
    """
    parent_sock, child_sock = socket.socketpair()
    # New call lines reach the worker through this one, as file descriptors.
    lines_sock, lines_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            worker_command(
                plugin_id, path, limits, child_sock.fileno(), lines_child.fileno(), standby=standby
            ),
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
            env=_env(),
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
    return proc, parent_sock, lines_sock, os.fdopen(read_fd, "rb")


def discard(spawned: Spawned) -> None:
    """End a worker that was never handed a plugin: kill it, reap it, close its ends."""
    proc, parent_sock, lines_sock, output = spawned
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()
    for closable in (parent_sock, lines_sock, output):
        closable.close()


def worker_command(
    plugin_id: str,
    path: Path,
    limits: IsolationLimits,
    fd: int,
    lines_fd: int,
    *,
    standby: bool = False,
) -> list[str]:
    """The worker's command line (see worker.py)."""
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
        plugin_id,
        "--path",
        str(path),
        "--max-response-bytes",
        str(limits.max_response_bytes),
        "--spin-us",
        str(limits.spin_us),
    ]
    if limits.memory_limit_mb is not None:
        command += ["--memory-limit-mb", str(limits.memory_limit_mb)]
    if limits.cpu_limit_s is not None:
        command += ["--cpu-limit-s", str(limits.cpu_limit_s)]
    if limits.sha256 is not None:
        command += ["--sha256", limits.sha256]
    if standby:
        command.append("--standby")
    if limits.native_core:
        core = core_build.line_core()
        if core is not None:
            command += ["--line-core", str(core)]
    return command


def _env() -> dict[str, str]:
    # The worker must import this very package, whether the host runs installed or from
    # a checkout (where only the host's sys.path, not the worker's, would find it).
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def forward_output(stream: IO[bytes], plugin_id: str) -> None:
    """Each line the worker writes to stdout/stderr, as a WARNING naming the plugin."""
    logger = logging.getLogger(f"cliproxy_host.plugin.{plugin_id}")
    with stream:
        # Bounded lines: a plugin writing without newlines must not grow a host buffer.
        for line in iter(lambda: stream.readline(_LINE_LIMIT), b""):
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            if text:
                logger.warning("%s: %s", plugin_id, text)
