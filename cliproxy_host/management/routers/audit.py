"""The audit log of management writes, read back page by page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from ...observe.audit import MAX_PAGE
from ..deps import Service
from ..errors import ApiError, error_responses
from ..models import AuditPageOut
from ..plugin_routes import BASE_PATH

AUDIT = f"{BASE_PATH}/audit"

router = APIRouter()


@router.get(
    AUDIT,
    response_model=AuditPageOut,
    summary="Read the audit log",
    responses=error_responses(400, 401, 403, 404, 413, 414, 429, 431),
)
def read_audit(
    service: Service,
    plugin: Annotated[str | None, Query(max_length=128, description="only this plugin's")] = None,
    before: Annotated[
        int | None, Query(ge=1, description="only entries older than this seq")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="at most this many")] = 100,
) -> Response:
    """Management writes, newest first: time, client, key fingerprint, route, plugin,
    the config's SHA-256 before and after, and the outcome."""
    trail = service.audit
    if trail is None:
        raise ApiError(404, "not_found", "the audit log is off; set audit.enabled: true")
    page = trail.page(plugin=plugin, before=before, limit=limit)
    body = AuditPageOut.model_validate({"entries": page.entries, "next": page.next})
    return Response(body.model_dump_json(), media_type="application/json")
