"""The fuse of an isolated plugin: its workers' recent failures, and the restart backoff."""

from __future__ import annotations

import time
from collections import deque
from typing import Final

from .limits import IsolationLimits

_BACKOFF_START: Final = 0.25


class Fuse:
    """The failures of a plugin's workers within the fuse window, and the backoff they set.

    Not thread-safe: the supervisor holds its lock around every use.
    """

    def __init__(self, limits: IsolationLimits) -> None:
        self._crashes = limits.fuse_crashes
        self._window_s = limits.fuse_window_s
        self._backoff_initial_s = limits.backoff_initial_s
        self._backoff_max_s = limits.backoff_max_s
        self._failures: deque[float] = deque()
        self.reason: str | None = None  # why it blew, while it is blown

    def record(self, error: str, plugin_id: str) -> bool:
        """Count one failure; whether that blew the fuse (`reason` then says why)."""
        now = time.monotonic()
        self._failures.append(now)
        self._forget_old(now)
        count = len(self._failures)
        if count < self._crashes:
            return False
        self.reason = (
            f"plugin {plugin_id} fused after {count} crashes in {self._window_s:g} s: "
            f"{error}; change its config or file, or re-enable it"
        )
        return True

    def reset(self) -> None:
        self._failures.clear()
        self.reason = None

    def backoff(self) -> float:
        """Immediately for the first recent failure, then 0.25 s doubling, capped."""
        self._forget_old(time.monotonic())
        recent = len(self._failures)
        if recent <= 1:
            return self._backoff_initial_s
        return min(_BACKOFF_START * 2.0 ** (recent - 2), self._backoff_max_s)

    def _forget_old(self, now: float) -> None:
        while self._failures and now - self._failures[0] > self._window_s:
            self._failures.popleft()
