"""Prometheus metrics of the plugins: per-plugin call series bound at load, collected at scrape.

The call path pays for plain integer updates on objects the host bound to the plugin's
record when it loaded (no label lookup, no lock, no prometheus-client object per call;
prometheus-client's own Counter and Histogram cost about as much as the call itself);
prometheus-client builds the text format from them when /metrics is scraped. Everything
else (state, restarts, breaker, fuse, open streams, queue depths) is read at scrape time
from callbacks, so it costs the call path nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .tracing import Tracer

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "MAX_CODES",
    "MAX_METHODS",
    "OTHER",
    "SAMPLE_EVERY",
    "CallSeries",
    "MethodCounts",
    "Metrics",
    "PluginNumbers",
    "PluginStatus",
]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# The latency histogram's buckets are powers of two of nanoseconds: a call that took
# `elapsed` ns counts in bucket `elapsed.bit_length()` (bucket k holds 2^(k-1) <= ns < 2^k),
# one int method instead of a search through bounds on the call path. The scrape shows
# the bounds from 1.024 us (2^10 ns, the faster calls together) to 34.4 s (2^35 ns).
_SLOTS: Final = 64
_FIRST_SHOWN: Final = 10
_LAST_SHOWN: Final = 35
LATENCY_BUCKETS: Final = tuple(2**k / 1e9 for k in range(_FIRST_SHOWN, _LAST_SHOWN + 1))
_LE: Final = [repr(b) for b in LATENCY_BUCKETS]

# The latency histogram times one call in SAMPLE_EVERY of each method (every call is
# counted): a clock pair and the bucket cost more than everything else metrics add to an
# in-process call. A prime, so that a client cycling through 2, 3, 4 ... kinds of request
# on one method gets each kind timed alike.
SAMPLE_EVERY: Final = 7

# Label values come from callers (a /v1 call names any method; a plugin's error envelope
# any code): past these many per plugin and per method, the rest count as OTHER, so a
# client cannot grow the scrape without bound.
MAX_METHODS: Final = 64
MAX_CODES: Final = 32
OTHER: Final = "other"

# Breaker states as GuardedBackend.breaker names them; plugin states as Health's.
BREAKER_STATES: Final = ("closed", "open", "half_open")
PLUGIN_STATES: Final = ("running", "restarting", "unhealthy", "fused")


class MethodCounts:
    """One method's calls: started and finished, errors by code, and the timed ones
    (one in SAMPLE_EVERY) by bucket, with their total time.

    The host updates them on its call path (PluginHost._invoke) without a lock: under
    the GIL an attribute or list item update of an int has no point where another thread
    can run (no call, no backward jump), and the scrape only reads. The calls in flight
    are the started ones less the finished ones.
    """

    __slots__ = ("buckets", "errors", "finished", "started", "sum_ns")

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self.sum_ns = 0
        self.buckets = [0] * _SLOTS
        self.errors: dict[str, int] = {}

    def failed(self, code: str) -> None:
        errors = self.errors
        if code not in errors and len(errors) >= MAX_CODES:
            code = OTHER
        errors[code] = errors.get(code, 0) + 1

    def cumulative(self) -> list[tuple[str, float]]:
        """The histogram's buckets as Prometheus shows them: (le, calls at or below)."""
        counts = list(self.buckets)
        # Bucket k holds calls under 2^k ns: the first shown bound takes all below it.
        total = sum(counts[: _FIRST_SHOWN + 1])
        shown = [(_LE[0], float(total))]
        for le, count in zip(_LE[1:], counts[_FIRST_SHOWN + 1 : _LAST_SHOWN + 1], strict=True):
            total += count
            shown.append((le, float(total)))
        shown.append(("+Inf", float(sum(counts))))
        return shown


class CallSeries:
    """One plugin's call counts, made when it registers and bound to its record, so that
    a call finds them with one attribute read and one dict read."""

    __slots__ = ("_lock", "methods", "plugin_id", "tracer")

    def __init__(self, plugin_id: str, tracer: Tracer | None = None) -> None:
        self.plugin_id = plugin_id
        self.methods: dict[str, MethodCounts] = {}
        # Spans are made only when an OpenTelemetry SDK was set up when the plugin loaded.
        self.tracer = tracer
        self._lock = threading.Lock()

    def add(self, method: str) -> MethodCounts:
        """The counts of a method not seen before (OTHER's past MAX_METHODS)."""
        with self._lock:
            found = self.methods.get(method)
            if found is not None:
                return found
            if len(self.methods) >= MAX_METHODS:
                method = OTHER
                found = self.methods.get(OTHER)
                if found is not None:
                    return found
            counts = self.methods[method] = MethodCounts()
            return counts

    @property
    def in_flight(self) -> int:
        """Calls started and not finished, over every method."""
        # finished before started: read in this order, the difference is never negative.
        return sum(-counts.finished + counts.started for counts in list(self.methods.values()))


@dataclass(frozen=True)
class PluginStatus:
    """A loaded plugin as the scrape shows it (the host answers these)."""

    plugin_id: str
    state: str  # one of PLUGIN_STATES
    restarts: int
    breaker: str  # one of BREAKER_STATES


@dataclass(frozen=True)
class PluginNumbers:
    """One plugin's figures as the console shows them, read from the same counts as the
    scrape: calls finished, failed ones, the mean of the timed calls (None before any),
    calls in flight, and its status while loaded (None when it is not)."""

    plugin_id: str
    calls: int
    errors: int
    mean_seconds: float | None
    in_flight: int
    status: PluginStatus | None


Gauges = Callable[[], Mapping[str, int]]


class Metrics:
    """The host's metrics: the call series of every plugin that registered, and callbacks
    read at scrape time. Each Metrics has a registry of its own, so two hosts in one
    process never share series.

    `status` answers the loaded plugins; `streams` the open streams per plugin.
    """

    def __init__(
        self,
        status: Callable[[], Iterable[PluginStatus]],
        streams: Gauges,
        tracer: Callable[[], Tracer | None] = lambda: None,
    ) -> None:
        self._status = status
        self._streams = streams
        self._tracer = tracer
        self._queues: Gauges | None = None
        self._series: dict[str, CallSeries] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def plugin(self, plugin_id: str) -> CallSeries:
        """The plugin's call series, made the first time it registers (kept across reloads,
        so its counters never go back)."""
        series = self._series.get(plugin_id)
        if series is None:
            with self._lock:
                series = self._series.get(plugin_id)
                if series is None:
                    series = self._series[plugin_id] = CallSeries(plugin_id, self._tracer())
        return series

    def set_queue_depths(self, depths: Gauges) -> None:
        """Read `depths()` (subscriber -> queued events) at every scrape: the event bus's
        queues, wired where the host builds its bus."""
        self._queues = depths

    def numbers(self) -> list[PluginNumbers]:
        """Every plugin that registered or is loaded, by id, with its figures now."""
        with self._lock:
            series = dict(self._series)
        statuses = {s.plugin_id: s for s in self._status()}
        out = []
        for plugin_id in sorted(series.keys() | statuses.keys()):
            calls = errors = timed = sum_ns = in_flight = 0
            one = series.get(plugin_id)
            if one is not None:
                in_flight = one.in_flight
                for counts in list(one.methods.values()):
                    calls += counts.finished
                    errors += sum(list(counts.errors.values()))
                    timed += sum(counts.buckets)
                    sum_ns += counts.sum_ns
            mean = sum_ns / timed / 1e9 if timed else None
            out.append(
                PluginNumbers(plugin_id, calls, errors, mean, in_flight, statuses.get(plugin_id))
            )
        return out

    def render(self) -> bytes:
        """The Prometheus text format of every series."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """prometheus-client's collector protocol: every metric family, built now."""
        yield from self._calls()
        yield from self._plugins()
        streams = GaugeMetricFamily(
            "cliproxy_plugin_open_streams",
            "Executor streams open, by the plugin feeding them",
            labels=["plugin"],
        )
        for plugin_id, count in sorted(self._streams().items()):
            streams.add_metric([plugin_id], count)
        yield streams
        if self._queues is not None:
            queues = GaugeMetricFamily(
                "cliproxy_event_queue_depth",
                "Events waiting in a subscriber's queue",
                labels=["subscriber"],
            )
            for name, depth in sorted(self._queues().items()):
                queues.add_metric([name], depth)
            yield queues

    def _calls(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "cliproxy_plugin_calls",
            "Calls to a plugin method, failed ones included",
            labels=["plugin", "method"],
        )
        errors = CounterMetricFamily(
            "cliproxy_plugin_errors",
            "Calls to a plugin method that failed, by error code",
            labels=["plugin", "method", "code"],
        )
        latency = HistogramMetricFamily(
            "cliproxy_plugin_call_duration_seconds",
            "Time of a plugin call as the host sees it (guard, backend, decoding);"
            f" one call in {SAMPLE_EVERY} of each method is timed",
            labels=["plugin", "method"],
        )
        in_flight = GaugeMetricFamily(
            "cliproxy_plugin_calls_in_flight",
            "Calls to a plugin that have not returned yet",
            labels=["plugin"],
        )
        with self._lock:
            plugins = sorted(self._series.items())
        for plugin_id, series in plugins:
            in_flight.add_metric([plugin_id], series.in_flight)
            for method, counts in sorted(dict(series.methods).items()):
                labels = [plugin_id, method]
                buckets = counts.cumulative()
                calls.add_metric(labels, counts.finished)
                for code, count in sorted(dict(counts.errors).items()):
                    errors.add_metric([*labels, code], count)
                latency.add_metric(labels, buckets, counts.sum_ns / 1e9)
        yield from (calls, errors, latency, in_flight)

    def _plugins(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "cliproxy_plugin_state",
            "A loaded plugin's state: 1 for the state it is in, 0 for the others",
            labels=["plugin", "state"],
        )
        restarts = CounterMetricFamily(
            "cliproxy_plugin_restarts",
            "Restarts of an isolated plugin's worker since it loaded",
            labels=["plugin"],
        )
        breaker = GaugeMetricFamily(
            "cliproxy_plugin_breaker_state",
            "A loaded plugin's circuit breaker: 1 for the state it is in, 0 for the others",
            labels=["plugin", "state"],
        )
        fused = GaugeMetricFamily(
            "cliproxy_plugin_fused",
            "1 while a plugin is fused (crashed too often; off until changed or enabled)",
            labels=["plugin"],
        )
        for status in sorted(self._status(), key=lambda s: s.plugin_id):
            pid = status.plugin_id
            for name in PLUGIN_STATES:
                state.add_metric([pid, name], 1.0 if status.state == name else 0.0)
            for name in BREAKER_STATES:
                breaker.add_metric([pid, name], 1.0 if status.breaker == name else 0.0)
            restarts.add_metric([pid], status.restarts)
            fused.add_metric([pid], 1.0 if status.state == "fused" else 0.0)
        yield from (state, restarts, breaker, fused)
