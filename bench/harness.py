"""Timing primitives: interleaved rounds, per-round statistics, ratios of medians.

A candidate is a function ``run(n) -> elapsed_ns`` that performs ``n`` operations and
times them itself (so that set-up is never timed). ``compare`` calibrates ``n`` per
candidate so that one round takes about ``Settings.round_seconds``, warms every
candidate up, then runs the rounds with the candidates interleaved (the order rotates
each round) so that drift of the machine hits every candidate alike.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

Candidate = Callable[[int], int]


@dataclass(frozen=True)
class Settings:
    """How hard to measure. ``quick`` is a smoke mode: the numbers are only indicative."""

    quick: bool
    rounds: int
    round_seconds: float
    warmup_seconds: float

    @classmethod
    def full(cls) -> Settings:
        # Many short rounds rather than a few long ones: candidates interleave finely,
        # and the median shrugs off the rounds that other work on the machine hit.
        return cls(quick=False, rounds=21, round_seconds=0.08, warmup_seconds=0.1)

    @classmethod
    def smoke(cls) -> Settings:
        return cls(quick=True, rounds=3, round_seconds=0.01, warmup_seconds=0.005)


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


@dataclass(frozen=True)
class Stats:
    """Per-operation times (ns) of each round, and their summary.

    The spread shown is the interquartile range (q1-q3) over the rounds: on a shared
    machine a burst of someone else's work can hit a round or two, and min-max would
    report that burst rather than the benchmark.
    """

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def q1(self) -> float:
        return _quartiles(self.samples)[0]

    @property
    def q3(self) -> float:
        return _quartiles(self.samples)[1]

    def spread_pct(self) -> float:
        """(q3 - q1) / median, in percent."""
        return 100.0 * (self.q3 - self.q1) / self.median if self.median else 0.0


@dataclass(frozen=True)
class Ratio:
    """a / b: the median of the per-round ratios a[i] / b[i] with their interquartile range,
    and the ratio of the medians median(a) / median(b).

    The candidates of one round run back to back, so a pair shares the machine's state of
    the moment. On a quiet machine both values agree; on a shared one (other processes
    taking a core now and then) the medians of a and b can come from rounds in different
    states, and the paired value is the one that holds still. It is the one judged.
    """

    value: float
    q1: float
    q3: float
    of_medians: float

    @classmethod
    def of(cls, a: Stats, b: Stats) -> Ratio:
        per_round = [x / y for x, y in zip(a.samples, b.samples, strict=True) if y]
        if not per_round or not b.median:
            nan = float("nan")
            return cls(nan, nan, nan, nan)
        q1, q3 = _quartiles(per_round)
        return cls(statistics.median(per_round), q1, q3, a.median / b.median)

    def text(self, suffix: str = "x") -> str:
        return f"{self.value:.2f}{suffix} ({self.q1:.2f}-{self.q3:.2f})"

    def full_text(self) -> str:
        """With the ratio of the medians beside the paired one."""
        return f"{self.text()}; of medians {self.of_medians:.2f}x"


@dataclass
class Measured:
    """The result of ``compare``: Stats per candidate, and the n each round used."""

    stats: dict[str, Stats] = field(default_factory=dict)
    iterations: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Stats:
        return self.stats[name]

    def ratio(self, a: str, b: str) -> Ratio:
        return Ratio.of(self.stats[a], self.stats[b])


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC pauses inside a timed loop (every candidate alike)."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def calibrate(run: Candidate, seconds: float, start: int = 1, limit: int = 10_000_000) -> int:
    """The n for which run(n) takes about `seconds` (at least `start`)."""
    n = max(1, start)
    while True:
        elapsed = run(n)
        if elapsed >= seconds * 1e9 * 0.2 or n >= limit:
            per_op = max(elapsed, 1) / n
            return int(min(limit, max(start, seconds * 1e9 / per_op)))
        n *= 4


def compare(
    candidates: Mapping[str, Candidate],
    settings: Settings,
    *,
    round_seconds: float | None = None,
    rounds: int | None = None,
    fixed_n: Mapping[str, int] | None = None,
    per_op: Mapping[str, int] | None = None,
) -> Measured:
    """Run every candidate for ``settings.rounds`` interleaved rounds.

    ``fixed_n`` skips calibration for the candidates it names; ``per_op[name]`` divides
    a candidate's elapsed time by that many operations per unit of n (default 1).
    """
    seconds = settings.round_seconds if round_seconds is None else round_seconds
    fixed_n = fixed_n or {}
    per_op = per_op or {}
    names = list(candidates)
    result = Measured()
    with gc_paused():
        for name in names:
            run = candidates[name]
            run(1)  # first call: imports, caches, lazily built objects
            warm_until = time.perf_counter() + settings.warmup_seconds
            while time.perf_counter() < warm_until:
                run(1)
            result.iterations[name] = fixed_n.get(name) or calibrate(run, seconds)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for r in range(settings.rounds if rounds is None else rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                n = result.iterations[name]
                elapsed = candidates[name](n)
                samples[name].append(elapsed / (n * per_op.get(name, 1)))
    result.stats = {name: Stats(tuple(values)) for name, values in samples.items()}
    return result


def fmt_ns(ns: float) -> str:
    """A time in the unit that reads best."""
    if math.isnan(ns):
        return "n/a"
    if ns < 10_000:
        return f"{ns:,.0f} ns"
    if ns < 10_000_000:
        return f"{ns / 1000:,.1f} us"
    return f"{ns / 1e6:,.1f} ms"


def fmt_stats(stats: Stats) -> str:
    """median [q1-q3] of a per-operation time."""
    return f"{fmt_ns(stats.median)} [{fmt_ns(stats.q1)}-{fmt_ns(stats.q3)}]"


def median_of(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
