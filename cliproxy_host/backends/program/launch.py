"""How the host starts a plugin program: its command, directory, environment, socket and limits."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from ..isolated.limits import IsolationLimits

ID_VARIABLE: Final = "CLIPROXY_PLUGIN_ID"  # the plugin ID the program must say in rpc.hello
FD_VARIABLE: Final = "CLIPROXY_PLUGIN_FD"  # the connected socket the program speaks on
# The plugins' spin-us: how long the program may poll for the next call after answering
# one before it sleeps (the SDK does; a program is free to ignore it).
SPIN_VARIABLE: Final = "CLIPROXY_PLUGIN_SPIN_US"


@dataclass(frozen=True)
class ProgramCommand:
    """`plugins.configs.<id>.command` with its `cwd` and `env` (from the config file only)."""

    argv: tuple[str, ...]
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("a plugin command needs at least the program to run")

    def program_file(self) -> Path:
        """The file whose change restarts the plugin: the last argument naming an existing
        file (the script of `python3 my_plugin.py`), else the program itself on PATH."""
        base = self.cwd or Path.cwd()
        for arg in reversed(self.argv):
            candidate = base / arg
            if not arg.startswith("-") and candidate.is_file():
                return candidate.resolve()
        found = shutil.which(self.argv[0], path=os.environ.get("PATH"))
        return Path(found).resolve() if found else base / self.argv[0]


def start(
    plugin_id: str, command: ProgramCommand, limits: IsolationLimits
) -> tuple[subprocess.Popen[bytes], socket.socket, IO[bytes]]:
    """Start the program with one end of a socketpair inherited (its number in
    CLIPROXY_PLUGIN_FD): the process, the host's end, and its stdout/stderr to read."""
    ours, theirs = socket.socketpair()
    read_fd, write_fd = os.pipe()
    env = dict(os.environ)
    # `cliproxy_host.sdk` importable by the program's Python, installed or from a checkout.
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(command.env)
    env[ID_VARIABLE] = plugin_id
    env[FD_VARIABLE] = str(theirs.fileno())
    env[SPIN_VARIABLE] = str(limits.spin_us)
    try:
        proc = subprocess.Popen(
            list(command.argv),
            cwd=command.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            pass_fds=(theirs.fileno(),),
            # A group of its own: whatever the program starts is killed with it, and a
            # Ctrl-C at the host's terminal stays the host's.
            start_new_session=True,
        )
    except BaseException:
        ours.close()
        os.close(read_fd)
        raise
    finally:
        theirs.close()
        os.close(write_fd)
    _limit(proc.pid, limits)
    return proc, ours, os.fdopen(read_fd, "rb")


def _limit(pid: int, limits: IsolationLimits) -> None:
    # Set from outside, right after the start: preexec_fn is unsafe in a threaded host.
    # The program's first instructions run unlimited, which is harmless.
    with contextlib.suppress(ProcessLookupError):  # gone already: its reader sees it
        _set_limits(pid, limits)


def _set_limits(pid: int, limits: IsolationLimits) -> None:
    if limits.memory_limit_mb is not None:
        size = limits.memory_limit_mb * 1024 * 1024
        resource.prlimit(pid, resource.RLIMIT_AS, (size, size))
    if limits.cpu_limit_s is not None:
        resource.prlimit(pid, resource.RLIMIT_CPU, (limits.cpu_limit_s, limits.cpu_limit_s))
