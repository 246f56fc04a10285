"""The host's end of a call line in C: linecore.c's exchange and rings, loaded once per process.

An exchange sends one frame and reads the worker's next, with the GIL released once for
both. With a worker whose lines are served by the core, each line has a ring: frames
travel in shared memory, a waiting end polls a word for a moment and then sleeps on it
(futex), and nothing is a syscall while both ends are awake. Where the core cannot be
built (no C compiler), call lines exchange in Python (wire.py), which is slower; the same
WARNING as for the worker says so once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ...abi import ffi
from . import core_build

log = logging.getLogger(__name__)

# Bound by address (core_build.bind), as the worker's are (core.py).
_FUNCTIONS: Final = {
    "cw_exchange": (
        "int(*)(void*, int, int, uint64_t, const char*, size_t, const char*, size_t, double, "
        "double, char*, size_t, long*, int*, double*, double)"
    ),
    "cw_thread_line_serve": (
        "int(*)(void*, int, int, uint64_t, const char*, size_t, double, char*, size_t, long*, int*)"
    ),
    "cw_ring_size": "size_t(*)(void)",
    "cw_ring_open": "void*(*)(int)",
    "cw_ring_abort": "void(*)(void*)",
    "cw_ring_unmap": "void(*)(void*)",
}

# cw_exchange's answers (CX_* in linecore.c).
OK: Final = 0
SEND_TIMEOUT: Final = 1
SEND_FAILED: Final = 2
RECV_TIMEOUT: Final = 3
RECV_FAILED: Final = 4
EOF: Final = 5
PROTOCOL: Final = 6


# Sealed on every ring: its size can no longer change, nor its seals.
RING_SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class HostCore:
    """The core's host-side functions (see linecore.c), and making a call line's ring."""

    def __init__(self, path: Path) -> None:
        """Load and bind the functions; OSError when the library cannot be, or lacks one."""
        self._library, bound = core_build.bind(path, _FUNCTIONS)  # kept: code stays mapped
        self.exchange: Callable[..., int] = bound["cw_exchange"]
        self.thread_line_serve: Callable[..., int] = bound["cw_thread_line_serve"]
        self.ring_abort: Callable[[Any], None] = bound["cw_ring_abort"]
        self.ring_unmap: Callable[[Any], None] = bound["cw_ring_unmap"]
        self._ring_open = bound["cw_ring_open"]
        self.ring_size: int = bound["cw_ring_size"]()

    def new_ring(self) -> tuple[Any, int]:
        """A ring for a new call line: its mapping here, and its memfd to pass to the
        worker (the caller closes it once passed). OSError when none can be had.

        Sealed at its size: a worker that shrank the file under the host's mapping would
        crash the host (SIGBUS) on its next access."""
        fd = os.memfd_create("cliproxy-call-line", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, self.ring_size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, RING_SEALS)
            return self._map(fd), fd
        except BaseException:
            os.close(fd)
            raise

    def map_ring(self, fd: int) -> Any:
        """Map the ring a worker made for a thread line (the fd stays the caller's);
        ProtocolError-worthy ValueError when it is not a ring sealed at its size, OSError
        when it cannot be mapped."""
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        size = os.fstat(fd).st_size
        if seals & RING_SEALS != RING_SEALS or size != self.ring_size:
            raise ValueError(
                f"a thread line's ring of {size} bytes with seals {seals:#x}, where "
                f"{self.ring_size} bytes sealed {RING_SEALS:#x} were due"
            )
        return self._map(fd)

    def _map(self, fd: int) -> Any:
        ring = self._ring_open(fd)
        if ring == ffi.NULL:
            raise OSError(errno.ENOMEM, "cannot map a call line's ring")
        return ring


_lock = threading.Lock()
_loaded: dict[Path, HostCore | None] = {}


def host_core() -> HostCore | None:
    """The built line core's host side; None when it cannot be built or loaded."""
    path = core_build.line_core()  # built once; logs what is missing when it returns None
    if path is None:
        return None
    with _lock:
        if path not in _loaded:
            _loaded[path] = _load(path)
        return _loaded[path]


def _load(path: Path) -> HostCore | None:
    try:
        return HostCore(path)
    except OSError as exc:
        log.warning(
            "cannot load the native line core %s in the host (%s); call lines exchange in "
            "Python, which is slower",
            path,
            exc,
        )
        return None
