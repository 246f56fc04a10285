"""What the host records of itself: the audit log, the Prometheus metrics, OpenTelemetry spans.

audit: AuditLog (append-only JSON lines, rotated) · metrics: Metrics and the per-plugin
CallSeries bound at load · tracing: the tracer spans come from, when a provider is set.
"""
