"""OpenTelemetry spans around plugin calls, read back with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once

from cliproxy_host import errors
from cliproxy_host.host.facade import PluginHost

from ..conftest import HostFactory


def _reset_global_provider() -> None:
    # The API lets a process set its provider once; tests must leave none behind, or every
    # later host in the session would trace.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    try:
        yield spans
    finally:
        provider.shutdown()
        _reset_global_provider()


def test_each_plugin_call_is_a_span_with_its_plugin_method_and_error(
    exporter: InMemorySpanExporter, testplugin: Path, host_factory: HostFactory
) -> None:
    host_factory.add("tp", testplugin)
    host_factory.write_config(configs={"tp": {"enabled": True}})
    with PluginHost.from_config(host_factory.config_path) as host:
        assert host.call("tp", "echo", {"a": 1}) == {"a": 1}
        with pytest.raises(errors.PluginError):
            host.call("tp", "fail", {})
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"echo", "fail"}
    echo, fail = spans["echo"], spans["fail"]
    assert echo.attributes is not None
    assert dict(echo.attributes) == {"cliproxy.plugin": "tp", "cliproxy.method": "echo"}
    assert echo.status.status_code is StatusCode.UNSET
    assert fail.attributes is not None
    assert fail.attributes["cliproxy.error_code"] == "plugin_error"
    assert fail.status.status_code is StatusCode.ERROR


def test_without_a_provider_no_span_is_made(testplugin: Path, host_factory: HostFactory) -> None:
    host_factory.add("tp", testplugin)
    host_factory.write_config(configs={"tp": {"enabled": True}})
    with PluginHost.from_config(host_factory.config_path) as host:
        assert host.metrics is not None
        assert host.metrics.plugin("tp").tracer is None
