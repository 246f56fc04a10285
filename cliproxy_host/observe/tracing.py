"""OpenTelemetry spans around plugin calls, with the optional `otel` extra and an SDK set up.

The API alone (which other packages bring) answers no-op spans that still cost a few
microseconds a call: spans are made only when the application has set a real tracer
provider before the plugin first loads, and never when opentelemetry is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..errors import PluginError

try:
    from opentelemetry import trace as otel
except ImportError:  # the otel extra is not installed: no spans
    otel = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer
else:
    Tracer = Any

__all__ = ["INSTRUMENTATION", "Tracer", "plugin_tracer", "traced"]

INSTRUMENTATION: Final = "cliproxy_host"

T = TypeVar("T")


def plugin_tracer() -> Tracer | None:
    """The tracer of the global provider, or None when opentelemetry is missing or nobody
    set a provider (the API's default is a proxy to a no-op)."""
    if otel is None:
        return None
    provider = otel.get_tracer_provider()
    if isinstance(provider, otel.ProxyTracerProvider | otel.NoOpTracerProvider):
        return None
    return provider.get_tracer(INSTRUMENTATION)


def traced(tracer: Tracer, plugin_id: str, method: str, run: Callable[[], T]) -> T:
    """`run()` inside a span named for the method; a PluginError sets the span's status
    to error, with its code as an attribute."""
    attributes = {"cliproxy.plugin": plugin_id, "cliproxy.method": method}
    with tracer.start_as_current_span(
        method, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            return run()
        except PluginError as exc:
            span.set_attribute("cliproxy.error_code", exc.code)
            span.set_status(otel.Status(otel.StatusCode.ERROR, exc.message))
            raise
