"""Prometheus metrics of the plugins: per-plugin call series bound at load, collected at scrape.

The call path pays for plain integer updates on objects the host bound to the plugin's
record when it loaded (no label lookup, no lock, no prometheus-client object per call);
prometheus-client builds the text format from them when /metrics is scraped. Everything
else (state, restarts, breaker, fuse, open streams, queue depths) is read at scrape time
from callbacks, so it costs the call path nothing.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from time import perf_counter_ns
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..errors import PluginError
from .tracing import Tracer, traced

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "MAX_CODES",
    "MAX_METHODS",
    "OTHER",
    "CallSeries",
    "Metrics",
    "PluginStatus",
]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# Upper bounds of the latency histogram, seconds: an in-process call takes microseconds,
# an isolated one tens of them, a model call seconds.
LATENCY_BUCKETS: Final = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_BOUNDS_NS: Final = [round(b * 1e9) for b in LATENCY_BUCKETS]
_LE: Final = [f"{b:g}" for b in LATENCY_BUCKETS]

# Label values come from callers (a /v1 call names any method; a plugin's error envelope
# any code): past these many per plugin and per method, the rest count as OTHER, so a
# client cannot grow the scrape without bound.
MAX_METHODS: Final = 64
MAX_CODES: Final = 32
OTHER: Final = "other"

# Breaker states as GuardedBackend.breaker names them; plugin states as Health's.
BREAKER_STATES: Final = ("closed", "open", "half_open")
PLUGIN_STATES: Final = ("running", "restarting", "unhealthy", "fused")


class _Method:
    """One method's counts. Updated without a lock: under the GIL an attribute or list
    item `+=` of an int has no point where another thread can run (no call, no jump
    back), and the scrape only reads."""

    __slots__ = ("buckets", "calls", "errors", "sum_ns")

    def __init__(self) -> None:
        self.calls = 0
        self.sum_ns = 0
        # Per bucket, not cumulative; the last one counts what is above every bound.
        self.buckets = [0] * (len(_BOUNDS_NS) + 1)
        self.errors: dict[str, int] = {}

    def failed(self, code: str) -> None:
        errors = self.errors
        if code not in errors and len(errors) >= MAX_CODES:
            code = OTHER
        errors[code] = errors.get(code, 0) + 1


class CallSeries:
    """One plugin's call counts, made when it registers and bound to its record, so that
    a call finds them with one attribute read."""

    __slots__ = ("_lock", "in_flight", "methods", "plugin_id", "tracer")

    def __init__(self, plugin_id: str, tracer: Tracer | None = None) -> None:
        self.plugin_id = plugin_id
        self.methods: dict[str, _Method] = {}
        self.in_flight = 0
        # Spans are made only when an OpenTelemetry SDK was set up when the plugin loaded.
        self.tracer = tracer
        self._lock = threading.Lock()

    def call(self, method: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, counted under `method`: its time, and its error code if it fails."""
        series = self.methods.get(method) or self._add(method)
        if self.tracer is not None:
            run = partial(self._count, series, fn, args)
            return traced(self.tracer, self.plugin_id, method, run)
        return self._count(series, fn, args)

    def _count(self, series: _Method, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        self.in_flight += 1
        start = perf_counter_ns()
        try:
            return fn(*args)
        except PluginError as exc:
            series.failed(exc.code)
            raise
        finally:
            elapsed = perf_counter_ns() - start
            self.in_flight -= 1
            series.calls += 1
            series.sum_ns += elapsed
            series.buckets[bisect_left(_BOUNDS_NS, elapsed)] += 1

    def _add(self, method: str) -> _Method:
        with self._lock:
            found = self.methods.get(method)
            if found is not None:
                return found
            if len(self.methods) >= MAX_METHODS:
                method = OTHER
                found = self.methods.get(OTHER)
                if found is not None:
                    return found
            series = self.methods[method] = _Method()
            return series


@dataclass(frozen=True)
class PluginStatus:
    """A loaded plugin as the scrape shows it (the host answers these)."""

    plugin_id: str
    state: str  # one of PLUGIN_STATES
    restarts: int
    breaker: str  # one of BREAKER_STATES


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
            "Time of a plugin call as the host sees it (guard, backend, decoding)",
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
                calls.add_metric(labels, counts.calls)
                for code, count in sorted(dict(counts.errors).items()):
                    errors.add_metric([*labels, code], count)
                cumulative, buckets = 0, []
                for le, count in zip([*_LE, "+Inf"], list(counts.buckets), strict=True):
                    cumulative += count
                    buckets.append((le, cumulative))
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
