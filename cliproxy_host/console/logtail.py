"""The console's log tail: a bounded ring of the host's recent log lines (the cliproxy_host
loggers), keys masked out, and a bounded count of tails open on it."""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_LINE_CHARS",
    "MAX_TAILS",
    "RING_LINES",
    "TAIL_SECONDS",
    "LogLine",
    "LogRing",
    "TailSlots",
    "mask",
    "shared_ring",
]

# The lines kept (the newest): what a tail shows first, and all the memory the ring takes.
RING_LINES: Final = 500
# A line past this is cut: one huge message must not fill a browser or the ring.
MAX_LINE_CHARS: Final = 2_000
# Tails open at once, over every session: each holds a connection and a task.
MAX_TAILS: Final = 4
# A tail ends after this (the page offers to reopen it), even while its session lives.
TAIL_SECONDS: Final = 15 * 60

# What reads as a credential in a line: an Authorization value, a key=... or key: ...
# pair, a query's key=. The host's loggers never log keys; this is the second line.
_SECRET: Final = re.compile(
    r"(?i)(bearer\s+|basic\s+|(?:api[-_]?key|secret[-_]?key|x-api-key|key|token|password"
    r"|authorization)\s*[=:]\s*['\"]?)([^\s'\",;&]+)"
)


def mask(text: str, is_key: Callable[[str], bool] = lambda _: False) -> str:
    """`text` with every credential-looking value, and every word `is_key` says is a key,
    replaced by `***`."""
    text = _SECRET.sub(lambda m: m.group(1) + "***", text)
    return re.sub(r"[^\s'\",;&=:]{8,}", lambda m: "***" if is_key(m.group(0)) else m.group(0), text)


@dataclass(frozen=True)
class LogLine:
    seq: int  # goes up by one a line, so a tail asks for what came after what it showed
    text: str


class LogRing(logging.Handler):
    """A logging handler that keeps the last `size` lines, formatted and masked."""

    def __init__(self, size: int = RING_LINES) -> None:
        super().__init__()
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        self._lines: deque[LogLine] = deque(maxlen=size)
        self._seq = 0
        self._ring_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = mask(self.format(record).replace("\n", " | "))[:MAX_LINE_CHARS]
        except Exception:  # a record that cannot be formatted is logging's to report
            self.handleError(record)
            return
        with self._ring_lock:
            self._seq += 1
            self._lines.append(LogLine(self._seq, text))

    def after(self, seq: int) -> list[LogLine]:
        """The lines kept with a seq above `seq`, oldest first."""
        with self._ring_lock:
            return [line for line in self._lines if line.seq > seq]


_shared: dict[str, LogRing] = {}  # logger name -> its ring
_shared_lock = threading.Lock()


def shared_ring(logger: str = "cliproxy_host") -> LogRing:
    """The one ring on `logger`, added the first time it is asked for: every console in
    the process reads the same lines, and no handler piles up per server."""
    with _shared_lock:
        ring = _shared.get(logger)
        if ring is None:
            ring = _shared[logger] = LogRing()
            # The ring sees what the host logs at the level `serve --log-level` set.
            logging.getLogger(logger).addHandler(ring)
        return ring


class TailSlots:
    """At most `limit` tails at once: take a slot or be refused."""

    def __init__(self, limit: int = MAX_TAILS) -> None:
        self._free = limit
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._free == 0:
                return False
            self._free -= 1
            return True

    def give(self) -> None:
        with self._lock:
            self._free += 1
