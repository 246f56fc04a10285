"""GET /metrics: the host's Prometheus metrics, behind the management key or the metrics key."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Response
from starlette.requests import Request

from ...observe.metrics import CONTENT_TYPE
from ..auth import KeyChecker, ManagementAuth, presented_key
from ..deps import Service
from ..errors import ApiError, error_responses

METRICS = "/metrics"

router = APIRouter()


class MetricsGate:
    """The network rule, then `remote-management.metrics-key` (a scraper's key that opens
    only this route) or else the management key, with its lockout after wrong keys."""

    def __init__(self, auth: ManagementAuth, metrics_key: str | None) -> None:
        self._auth = auth
        self._checker = KeyChecker(metrics_key) if metrics_key else None

    async def __call__(self, request: Request) -> None:
        presented = presented_key(request.headers)
        if self._checker is not None and presented is not None:
            ok = self._checker.verify_fast(presented)
            if ok is None:
                ok = await anyio.to_thread.run_sync(self._checker.verify, presented)
            if ok:
                await self._auth.network(request)
                return
        # Not the metrics key: the management key's checks, counting a wrong key.
        await self._auth(request)


@router.get(
    METRICS,
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}},
        **error_responses(401, 403, 404, 414, 429, 431),
    },
)
def metrics(service: Service) -> Response:
    """Calls, errors and latency per plugin and method, calls in flight, each loaded
    plugin's state, restarts, breaker and fuse, and open streams, in Prometheus' text
    format. Opened by the management key or remote-management.metrics-key."""
    source = service.host.metrics
    if source is None:
        raise ApiError(404, "not_found", "metrics are off; set metrics.enabled: true")
    return Response(source.render(), media_type=CONTENT_TYPE)
