"""The host's metrics: calls, errors and latency per plugin and method, in-flight calls, each
loaded plugin's state, restarts, breaker and fuse, open streams, queue depths."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cliproxy_host import errors
from cliproxy_host.host.facade import PluginHost
from cliproxy_host.observe.metrics import MAX_METHODS, OTHER, SAMPLE_EVERY, Metrics

from ..conftest import CompilePlugin, HostFactory
from ..host.streamutil import stream_plugin
from ..serverutil import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(host: PluginHost) -> Samples:
    """Every sample of the host's /metrics text, by name and sorted labels."""
    assert host.metrics is not None
    text = host.metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def make_host(host_factory: HostFactory) -> Iterator[Any]:
    made: list[PluginHost] = []

    def make(
        plugins: dict[str, Path], configs: dict[str, dict[str, Any]], **section: Any
    ) -> PluginHost:
        for pid, library in plugins.items():
            host_factory.add(pid, library)
        host_factory.write_config(configs=configs, extra=section.pop("extra", None))
        if section:
            text = host_factory.config_path.read_text()
            keys = "".join(f"  {k}: {v}\n" for k, v in section.items())
            host_factory.config_path.write_text(text.replace("plugins:\n", "plugins:\n" + keys, 1))
        host = PluginHost.from_config(host_factory.config_path)
        made.append(host)
        return host

    yield make
    for host in made:
        host.close()


def test_a_plugin_has_its_state_restarts_and_breaker_series_once_it_registers(
    testplugin: Path, make_host: Any
) -> None:
    host = make_host({"tp": testplugin}, {"tp": {"enabled": True}})
    samples = scrape(host)
    assert value(samples, "cliproxy_plugin_state", plugin="tp", state="running") == 1
    assert value(samples, "cliproxy_plugin_state", plugin="tp", state="fused") == 0
    assert value(samples, "cliproxy_plugin_breaker_state", plugin="tp", state="closed") == 1
    assert value(samples, "cliproxy_plugin_breaker_state", plugin="tp", state="open") == 0
    assert value(samples, "cliproxy_plugin_restarts_total", plugin="tp") == 0
    assert value(samples, "cliproxy_plugin_fused", plugin="tp") == 0
    # No call yet, and already its in-flight gauge.
    assert value(samples, "cliproxy_plugin_calls_in_flight", plugin="tp") == 0


def test_calls_errors_and_latency_are_counted_by_plugin_method_and_code(
    testplugin: Path, make_host: Any
) -> None:
    host = make_host({"tp": testplugin}, {"tp": {"enabled": True}})
    for _ in range(2 * SAMPLE_EVERY + 1):
        host.call("tp", "echo", {"a": 1})
    for _ in range(2):
        with pytest.raises(errors.PluginError):
            host.call("tp", "fail", {})
    assert host.dispatch("executor.identifier", {}) == {"identifier": "testplugin"}
    samples = scrape(host)
    echoes = 2 * SAMPLE_EVERY + 1
    assert value(samples, "cliproxy_plugin_calls_total", plugin="tp", method="echo") == echoes
    assert value(samples, "cliproxy_plugin_calls_total", plugin="tp", method="fail") == 2
    assert (
        value(samples, "cliproxy_plugin_calls_total", plugin="tp", method="executor.identifier")
        == 1
    )
    assert (
        value(
            samples, "cliproxy_plugin_errors_total", plugin="tp", method="fail", code="plugin_error"
        )
        == 2
    )
    assert not any(
        name == "cliproxy_plugin_errors_total" and ("method", "echo") in labels
        for name, labels in samples
    )
    count = value(
        samples, "cliproxy_plugin_call_duration_seconds_count", plugin="tp", method="echo"
    )
    total = value(samples, "cliproxy_plugin_call_duration_seconds_sum", plugin="tp", method="echo")
    top = value(
        samples,
        "cliproxy_plugin_call_duration_seconds_bucket",
        plugin="tp",
        method="echo",
        le="+Inf",
    )
    # Every call counted, one in SAMPLE_EVERY timed: the first, the 8th and the 15th.
    assert count == top == 3
    assert total is not None
    assert 0 < total < 3
    fast = value(
        samples,
        "cliproxy_plugin_call_duration_seconds_bucket",
        plugin="tp",
        method="echo",
        le="0.268435456",
    )
    assert fast == 3


def test_a_call_in_progress_is_in_flight_until_it_returns(testplugin: Path, make_host: Any) -> None:
    host = make_host({"tp": testplugin}, {"tp": {"enabled": True}})
    worker = threading.Thread(target=host.call, args=("tp", "sleep", {"ms": 1500}))
    worker.start()
    try:
        wait_until(lambda: value(scrape(host), "cliproxy_plugin_calls_in_flight", plugin="tp") == 1)
    finally:
        worker.join(timeout=10)
    samples = scrape(host)
    assert value(samples, "cliproxy_plugin_calls_in_flight", plugin="tp") == 0
    slow = value(
        samples,
        "cliproxy_plugin_call_duration_seconds_bucket",
        plugin="tp",
        method="sleep",
        le="1.073741824",
    )
    assert slow == 0  # it took 1.5 s: above the 2^30 ns bucket
    assert (
        value(
            samples,
            "cliproxy_plugin_call_duration_seconds_bucket",
            plugin="tp",
            method="sleep",
            le="2.147483648",
        )
        == 1
    )


def test_counts_stay_exact_under_concurrent_calls(testplugin: Path, make_host: Any) -> None:
    host = make_host({"tp": testplugin}, {"tp": {"enabled": True}})
    threads, calls = 4, 2000

    def run() -> None:
        for _ in range(calls):
            host.call("tp", "echo", {})

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    samples = scrape(host)
    assert (
        value(samples, "cliproxy_plugin_calls_total", plugin="tp", method="echo") == threads * calls
    )
    assert value(samples, "cliproxy_plugin_calls_in_flight", plugin="tp") == 0


def test_an_open_circuit_shows_in_the_breaker_series(testplugin: Path, make_host: Any) -> None:
    host = make_host({"tp": testplugin}, {"tp": {"enabled": True}}, **{"breaker-failures": 2})
    for _ in range(2):
        with pytest.raises(errors.PluginResponseError):
            host.call("tp", "not_json", {})
    samples = scrape(host)
    assert value(samples, "cliproxy_plugin_breaker_state", plugin="tp", state="open") == 1
    assert value(samples, "cliproxy_plugin_breaker_state", plugin="tp", state="closed") == 0
    assert value(samples, "cliproxy_plugin_state", plugin="tp", state="unhealthy") == 1
    with pytest.raises(errors.PluginUnavailable):
        host.call("tp", "echo", {})
    assert (
        value(
            scrape(host),
            "cliproxy_plugin_errors_total",
            plugin="tp",
            method="echo",
            code="plugin_unavailable",
        )
        == 1
    )


def test_restarts_and_the_fuse_of_an_isolated_plugin_are_series(
    testplugin: Path, make_host: Any
) -> None:
    host = make_host(
        {"tp": testplugin},
        {"tp": {"enabled": True, "isolation": "process", "timeout_ms": 2000}},
        **{"fuse-crashes": 2, "breaker-failures": 100},
    )
    with pytest.raises(errors.PluginCrashed):
        host.call("tp", "abort", {})
    wait_until(lambda: value(scrape(host), "cliproxy_plugin_restarts_total", plugin="tp") == 1)
    with pytest.raises(errors.PluginError):
        host.call("tp", "abort", {})
    wait_until(lambda: value(scrape(host), "cliproxy_plugin_fused", plugin="tp") == 1)
    samples = scrape(host)
    assert value(samples, "cliproxy_plugin_state", plugin="tp", state="fused") == 1
    assert value(samples, "cliproxy_plugin_state", plugin="tp", state="running") == 0
    assert (
        value(
            samples,
            "cliproxy_plugin_errors_total",
            plugin="tp",
            method="abort",
            code="plugin_crashed",
        )
        == 2
    )


def test_methods_past_the_bound_count_as_other(testplugin: Path, make_host: Any) -> None:
    host = make_host({"tp": testplugin}, {"tp": {"enabled": True}})
    for n in range(MAX_METHODS + 10):
        # Unknown to the plugin: each answers an error envelope, counted all the same.
        with pytest.raises(errors.PluginError):
            host.call("tp", f"no.such.method.{n}", {})
    samples = scrape(host)
    methods = {
        dict(labels)["method"] for name, labels in samples if name == "cliproxy_plugin_calls_total"
    }
    assert len(methods) == MAX_METHODS + 1
    assert value(samples, "cliproxy_plugin_calls_total", plugin="tp", method=OTHER) == 10


def test_open_streams_are_counted_per_plugin_while_open(
    compile_plugin: CompilePlugin, make_host: Any
) -> None:
    host = make_host({"sp": stream_plugin(compile_plugin)}, {"sp": {"enabled": True}})
    # An async stream the plugin never closes: open until its consumer closes it.
    stream = host.call_stream(
        "sp", "executor.execute_stream", {"mode": "async", "count": 1, "close": 0}
    )
    try:
        assert value(scrape(host), "cliproxy_plugin_open_streams", plugin="sp") == 1
    finally:
        stream.close()
    assert value(scrape(host), "cliproxy_plugin_open_streams", plugin="sp") is None


def test_queue_depths_are_read_from_their_callback_at_scrape_time(
    testplugin: Path, make_host: Any
) -> None:
    host = make_host({"tp": testplugin}, {"tp": {"enabled": True}})
    metrics = host.metrics
    assert isinstance(metrics, Metrics)
    assert value(scrape(host), "cliproxy_event_queue_depth", subscriber="audit-sink") is None
    depths = {"audit-sink": 3}
    metrics.set_queue_depths(lambda: depths)
    assert value(scrape(host), "cliproxy_event_queue_depth", subscriber="audit-sink") == 3
    depths["audit-sink"] = 0
    assert value(scrape(host), "cliproxy_event_queue_depth", subscriber="audit-sink") == 0


def test_the_event_bus_queues_are_in_the_metrics(testplugin: Path, make_host: Any) -> None:
    host = make_host({"tp": testplugin}, {"tp": {"enabled": True}})
    held, first = threading.Event(), threading.Event()

    def slow_sink(topic: str, data: Any) -> None:
        first.set()
        held.wait(10)

    host.events.subscribe("order.*", slow_sink)
    try:
        for n in range(4):
            host.events.publish("order.created", {"n": n})
        assert first.wait(10)
        # One event is in the handler, three wait in its queue.
        depths = [
            (dict(labels)["subscriber"].split("#")[0], sample)
            for (name, labels), sample in scrape(host).items()
            if name == "cliproxy_event_queue_depth"
        ]
        assert depths == [
            ("python:test_the_event_bus_queues_are_in_the_metrics.<locals>.slow_sink", 3)
        ]
    finally:
        held.set()


def test_with_metrics_off_nothing_is_counted(testplugin: Path, make_host: Any) -> None:
    host = make_host(
        {"tp": testplugin}, {"tp": {"enabled": True}}, extra={"metrics": {"enabled": False}}
    )
    assert host.metrics is None
    assert host.call("tp", "echo", {"a": 1}) == {"a": 1}


def test_numbers_give_the_scrapes_figures_per_plugin(testplugin: Path, make_host: Any) -> None:
    host = make_host({"tp": testplugin}, {"tp": {"enabled": True}})
    for _ in range(SAMPLE_EVERY + 1):
        host.call("tp", "echo", {})
    with pytest.raises(errors.PluginError):
        host.call("tp", "fail", {})
    assert host.metrics is not None
    (tp,) = host.metrics.numbers()
    samples = scrape(host)
    assert tp.plugin_id == "tp"
    assert tp.calls == SAMPLE_EVERY + 2
    assert tp.calls == sum(
        value(samples, "cliproxy_plugin_calls_total", plugin="tp", method=m) or 0
        for m in ("echo", "fail")
    )
    assert tp.errors == 1
    assert tp.in_flight == 0
    assert tp.mean_seconds is not None
    assert 0 < tp.mean_seconds < 5
    assert tp.status is not None
    assert (tp.status.state, tp.status.breaker, tp.status.restarts) == ("running", "closed", 0)
