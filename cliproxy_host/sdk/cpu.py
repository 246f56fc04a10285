"""Whether a CPU is spare right now: polling for an answer pays only when one is.

One rule for both ends of a plugin's calls: the host's isolated and program callers, and
a plugin program's SDK polling for its next call. Imports nothing of the host.
"""

from __future__ import annotations

import os
import time
from typing import Final

_PRESSURE: Final = "/proc/pressure/cpu"
_LOADAVG: Final = "/proc/loadavg"
_CHECK_EVERY_S: Final = 0.05
# A CPU counts as spare while tasks waited for one at most this share of the time.
STALLED_MAX: Final = 0.1
CPUS: Final = os.cpu_count() or 1


class _Sample:
    __slots__ = ("at", "spare", "stalled_us")

    def __init__(self) -> None:
        self.at = float("-inf")
        self.spare = True
        self.stalled_us: int | None = None


_last = _Sample()


def spare_cpu() -> bool:
    """Whether a CPU is spare: no more tasks running right now than CPUs (/proc/loadavg),
    or tasks waited for a CPU less than STALLED_MAX of the time since the last look (the
    kernel's CPU pressure, /proc/pressure/cpu). Looked up at most every 50 ms; True where
    the kernel says neither.

    On a loaded machine a polling thread takes the CPU the other end needs to answer, and
    sleeping until the answer comes is faster than polling for it. Each measure alone is
    misled by the host's own way of waiting, so either one saying "spare" is enough: a
    caller polling on one CPU while the worker runs the call on another counts as two
    running tasks, but keeps none waiting; a caller asleep on the CPU its worker answers
    from keeps the other waiting at each turn, but only one of them runs.
    """
    now = time.monotonic()
    if now - _last.at < _CHECK_EVERY_S:
        return _last.spare
    stalled = stalled_us()
    spare = _none_waiting()
    if not spare and stalled is not None and _last.stalled_us is not None:
        spare = (stalled - _last.stalled_us) / 1e6 <= STALLED_MAX * (now - _last.at)
    _last.spare = spare
    _last.at = now
    _last.stalled_us = stalled
    return spare


def stalled_us() -> int | None:
    """Microseconds some task has waited for a CPU since boot; None where not kept."""
    try:
        with open(_PRESSURE, "rb") as fh:
            return int(fh.readline().rsplit(b"total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def _none_waiting() -> bool:
    try:
        with open(_LOADAVG, "rb") as fh:
            running = int(fh.read().split()[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        return True
    return running <= CPUS
