"""Figure 10: the event bus, publish -> delivered to 1, 10 and 100 subscribers, against a
bare queue.Queue hand-off of the same objects (issue 16's Speed section).

The bus is the host's (`host.events`, the same EventBus plugins publish to): each
subscriber is an application function on the subscriber's own delivery thread. The
baseline hands the same object to one bounded queue.Queue per subscriber, each read by a
thread of its own. Both deliver in batches of at most BATCH events, waiting for every
subscriber to have taken the batch, so that neither overflows its queue (the bus would
drop, by its policy, what a full queue cannot take). The time per publish is from the
batch's first publish to the last subscriber's last delivery.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from bench.figures.common import Check, Context, FigureResult, table
from bench.harness import Candidate, compare, fmt_stats
from cliproxy_host import HostConfig, PluginHost

TITLE = "Event bus: publish -> delivered to 1/10/100 subscribers vs a bare queue.Queue hand-off"

SUBSCRIBERS: Final = (1, 10, 100)
TARGET: Final = 0.3
# Under the bus's per-subscriber queue bound (callbacks/events.QUEUE_SIZE, 1024).
BATCH: Final = 512
TOPIC: Final = "bench.event"
EVENT: Final = {"order": 42, "status": "paid"}
# A batch that is not delivered within this is a failure of the figure, not a hang.
_WAIT_S: Final = 30.0


class _Latch:
    """Counts the subscribers that still have to take the current batch."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._left = 0

    def arm(self, count: int) -> None:
        with self._cond:
            self._left = count

    def one_done(self) -> None:
        with self._cond:
            self._left -= 1
            if self._left == 0:
                self._cond.notify_all()

    def wait(self) -> None:
        deadline = time.monotonic() + _WAIT_S
        with self._cond:
            while self._left:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"a batch was not delivered within {_WAIT_S:g} s")


class _Counter:
    """One subscriber: counts down its batch and tells the latch when it has it all."""

    __slots__ = ("latch", "left")

    def __init__(self, latch: _Latch) -> None:
        self.latch = latch
        self.left = 0

    def __call__(self, *_event: Any) -> None:
        self.left -= 1
        if self.left == 0:
            self.latch.one_done()


def _batched(publish: Callable[[], object], counters: list[_Counter], latch: _Latch) -> Candidate:
    def run(n: int) -> int:
        start = time.perf_counter_ns()
        sent = 0
        while sent < n:
            size = min(BATCH, n - sent)
            for counter in counters:
                counter.left = size
            latch.arm(len(counters))
            for _ in range(size):
                publish()
            latch.wait()
            sent += size
        return time.perf_counter_ns() - start

    return run


class _QueueFanOut:
    """The baseline: one bounded queue.Queue and one reader thread per subscriber."""

    _STOP: Final = object()

    def __init__(self, subscribers: int, latch: _Latch) -> None:
        self.counters = [_Counter(latch) for _ in range(subscribers)]
        self.queues: list[queue.Queue[Any]] = [queue.Queue(1024) for _ in range(subscribers)]
        self._threads = [
            threading.Thread(target=self._read, args=(q, c), daemon=True)
            for q, c in zip(self.queues, self.counters, strict=True)
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, q: queue.Queue[Any], counter: _Counter) -> None:
        while True:
            item = q.get()
            if item is self._STOP:
                return
            counter(item)

    def publish(self) -> None:
        for q in self.queues:
            q.put_nowait(EVENT)

    def close(self) -> None:
        for q in self.queues:
            q.put(self._STOP)
        for thread in self._threads:
            thread.join(5)


def run(ctx: Context) -> FigureResult:
    result = FigureResult(10, TITLE)
    host = PluginHost(HostConfig())
    rows = []
    try:
        for key, count in zip("abc", SUBSCRIBERS, strict=True):
            bus_latch, queue_latch = _Latch(), _Latch()
            counters = [_Counter(bus_latch) for _ in range(count)]
            ids = [host.events.subscribe(TOPIC, counter) for counter in counters]
            fan_out = _QueueFanOut(count, queue_latch)
            try:
                candidates = {
                    "host.events": _batched(
                        lambda: host.events.publish(TOPIC, EVENT), counters, bus_latch
                    ),
                    "queue.Queue": _batched(fan_out.publish, fan_out.counters, queue_latch),
                }
                m = compare(candidates, ctx.settings)
            finally:
                fan_out.close()
                for sub_id in ids:
                    host.events.unsubscribe(sub_id)
            # Throughput of the bus / of the bare hand-off = baseline time / bus time.
            ratio = m.ratio("queue.Queue", "host.events")
            result.checks.append(
                Check.ratio(
                    f"10{key}",
                    f"publish -> delivered to {count} subscriber(s), bus / queue.Queue",
                    ratio,
                    target=f">= {TARGET}x",
                    met=ratio.value >= TARGET,
                    absolute=(
                        f"per publish: bus {fmt_stats(m['host.events'])};"
                        f" queue.Queue {fmt_stats(m['queue.Queue'])}"
                    ),
                )
            )
            rows += [
                [str(count), name, fmt_stats(stats), str(m.iterations[name])]
                for name, stats in m.stats.items()
            ]
    finally:
        host.close()
    result.details += [
        f"One publish of a small dict to every subscriber of {TOPIC!r}, delivered on each"
        f" subscriber's thread; batches of at most {BATCH} (under the queue bound).",
        "",
        *table(["subscribers", "candidate", "time per publish", "publishes per round"], rows),
    ]
    return result
