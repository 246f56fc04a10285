"""Whether a CPU is spare right now: polling for an answer pays only when one is."""

from __future__ import annotations

import os
import time
from typing import Final

_LOADAVG: Final = "/proc/loadavg"
_CHECK_EVERY_S: Final = 0.05
_CPUS: Final = os.cpu_count() or 1


class _Sample:
    __slots__ = ("at", "spare")

    def __init__(self) -> None:
        self.at = float("-inf")
        self.spare = True


_last = _Sample()


def spare_cpu() -> bool:
    """Whether no task waits for a CPU (the running count of /proc/loadavg is at most the
    CPU count), looked up at most every 50 ms; True where the kernel does not say.

    On a loaded machine a polling thread takes the CPU the other end needs to answer, and
    sleeping until the answer comes is faster than polling for it.
    """
    now = time.monotonic()
    if now - _last.at < _CHECK_EVERY_S:
        return _last.spare
    _last.at = now
    try:
        with open(_LOADAVG, "rb") as fh:
            running = int(fh.read().split()[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        _last.spare = True
    else:
        _last.spare = running <= _CPUS
    return _last.spare
