"""Routes and resources that plugins serve: /v0/management/... paths a management_api
plugin registered, and /v0/resource/plugins/<id>/... files it serves."""

from __future__ import annotations

from contextlib import nullcontext

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from ...errors import PluginError
from ...host.service import HostService
from ..audit import Caller, audited
from ..deps import Routes, Service
from ..errors import ApiError, plugin_route_failed
from ..plugin_routes import BASE_PATH, METHODS, RESOURCE_BASE, PluginRoutes

# Included after every host router: its catch-all path must not shadow a host route.
router = APIRouter(include_in_schema=False)
# Apart: resources have a gate of their own (a key, a signed link, or open; app.py).
resources = APIRouter(include_in_schema=False)


# The methods of a plugin route that are management writes, and so audited.
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@router.api_route(f"{BASE_PATH}/{{rest:path}}", methods=sorted(METHODS))
async def plugin_route(request: Request, rest: str, routes: Routes, service: Service) -> Response:
    owner = routes.route_owner(request.method, request.url.path)
    if owner is None:
        raise _unrouted(routes, request.method, request.url.path)
    audit = service if request.method in WRITES else None
    return await _forward(routes, owner, request, audit)


@resources.api_route(f"{RESOURCE_BASE}/{{plugin_id}}/{{rest:path}}", methods=["GET", "HEAD"])
async def plugin_resource(request: Request, plugin_id: str, rest: str, routes: Routes) -> Response:
    if not routes.has_resource(plugin_id, "/" + rest):
        raise ApiError(404, "not_found", f"plugin {plugin_id} serves no resource /{rest}")
    return await _forward(routes, plugin_id, request)


def _unrouted(routes: PluginRoutes, method: str, path: str) -> ApiError:
    """405 with Allow when another method is served at path, else 404."""
    allowed = routes.allowed_methods(path)
    if not allowed:
        return ApiError(404, "not_found", f"no route {method} {path}")
    allow = ", ".join(allowed)
    return ApiError(
        405,
        "method_not_allowed",
        f"{path} does not answer {method}; use {allow}",
        headers={"Allow": allow},
    )


async def _forward(
    routes: PluginRoutes, plugin_id: str, request: Request, audit: HostService | None = None
) -> Response:
    """Hand the request to its plugin as management.handle and answer what it answers;
    with `audit`, the call is a write in that service's audit log."""
    body = await request.body()
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name, []).append(value)
    query: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        query.setdefault(name, []).append(value)
    # Entered on the pool thread: the audit reads and writes files.
    written = (
        audited(audit, Caller.of(request), "plugin.route", plugin_id)
        if audit is not None
        else nullcontext()
    )

    def handle() -> tuple[int, dict[str, list[str]], bytes]:
        with written:
            return routes.handle(
                plugin_id,
                method=request.method,
                path=request.url.path,
                headers=headers,
                query=query,
                body=body,
            )

    try:
        status, out_headers, data = await run_in_threadpool(handle)
    except PluginError as exc:
        raise plugin_route_failed(exc) from None
    response = Response(content=data, status_code=status)
    for name, values in out_headers.items():
        for value in values:
            response.headers.append(name, value)
    return response
