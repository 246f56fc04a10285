"""FailureLimiter: clients that keep presenting wrong keys are locked out, longer each time."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FailureLimiter"]


@dataclass(slots=True)
class _Record:
    recent: deque[float]  # times of the latest failures before the first lockout
    last_failure: float
    strikes: int = 0  # lockouts so far; the next one lasts initial_delay * 2**strikes
    locked_until: float = field(default=-math.inf)


class FailureLimiter:
    """Slows down clients that keep presenting wrong keys.

    max_failures failures within window seconds lock the client out for initial_delay
    seconds; each further failure before the client has stayed quiet for window seconds
    after its lockout ended doubles the lockout, up to max_delay. A success forgets the
    client. At most max_clients clients are tracked; the least recently failing go first.
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 60.0,
        initial_delay: float = 1.0,
        max_delay: float = 300.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or max_clients < 1:
            raise ValueError("max_failures and max_clients must be at least 1")
        self._max_failures = max_failures
        self._window = window
        self._initial_delay = initial_delay
        self._max_delay = max_delay
        self._max_clients = max_clients
        self._clock = clock
        # Ordered by latest failure, oldest first, so pruning only looks at the front.
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many clients are tracked."""
        with self._lock:
            return len(self._records)

    def _expired(self, record: _Record, now: float) -> bool:
        return now - max(record.last_failure, record.locked_until) > self._window

    def check(self, client: str) -> float | None:
        """Seconds client must still wait before its next attempt, or None."""
        now = self._clock()
        with self._lock:
            record = self._records.get(client)
            if record is None or now >= record.locked_until:
                return None
            return record.locked_until - now

    def failure(self, client: str) -> float | None:
        """Record a failed attempt; returns the lockout in seconds it started, if any."""
        now = self._clock()
        with self._lock:
            record = self._records.pop(client, None)
            if record is None or self._expired(record, now):
                record = _Record(recent=deque(maxlen=self._max_failures), last_failure=now)
            while record.recent and now - record.recent[0] > self._window:
                record.recent.popleft()
            record.recent.append(now)
            record.last_failure = now
            self._records[client] = record
            delay: float | None = None
            if record.strikes or len(record.recent) >= self._max_failures:
                # strikes grows without bound; capping the exponent keeps the power finite.
                exponent = min(record.strikes, 64)
                delay = min(self._initial_delay * 2.0**exponent, self._max_delay)
                record.strikes += 1
                record.locked_until = now + delay
            self._prune(now)
            return delay

    def success(self, client: str) -> None:
        """Forget client's failures."""
        with self._lock:
            self._records.pop(client, None)

    def _prune(self, now: float) -> None:
        while self._records and self._expired(next(iter(self._records.values())), now):
            self._records.popitem(last=False)
        while len(self._records) > self._max_clients:
            self._records.popitem(last=False)
