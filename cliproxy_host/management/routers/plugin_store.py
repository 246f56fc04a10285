"""The plugin store (the Go host's routes): list the sources' plugins, install one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict

from ...errors import InvalidRequest, StoreSourceRequired
from ...store.install import InstallRequest, StoreInstaller, requested_version
from ...store.listing import store_list
from ..audit import Caller, audited
from ..deps import PluginId, Service
from ..errors import ApiError, error_responses
from ..json_body import JsonBodyRoute
from ..plugin_routes import BASE_PATH

STORE = f"{BASE_PATH}/plugin-store"

router = APIRouter(route_class=JsonBodyRoute)

IsolationParam = Literal["inprocess", "process"]


class InstallBody(BaseModel):
    """The optional body of an install: the Go host's `version`, and this host's
    `isolation` (how the installed plugin runs; `process` when left out)."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = None
    isolation: IsolationParam | None = None


@router.get(
    STORE,
    summary="List the plugin store",
    responses=error_responses(401, 403, 413, 414, 429, 431, 500, 502),
)
def list_store(service: Service) -> dict[str, Any]:
    """Every plugin the store sources list, with what is installed here; a source that
    cannot be read within plugins.store-timeout-seconds is in `source_errors`."""
    return store_list(service.config, service.host.plugins())


@router.post(
    f"{STORE}/{{plugin_id}}/install",
    summary="Install a plugin from the store",
    responses=error_responses(400, 401, 403, 404, 409, 413, 414, 415, 429, 431, 500, 502),
)
def install(
    plugin_id: PluginId,
    service: Service,
    http_request: Request,
    *,
    source: Annotated[str | None, Query(description="the store source's ID")] = None,
    version: Annotated[str | None, Query(description="the version; the latest if left out")] = None,
    isolation: Annotated[
        IsolationParam | None, Query(description="how the plugin runs; process if left out")
    ] = None,
    body: InstallBody | None = None,
) -> dict[str, Any]:
    """Download the plugin for this platform, verify its sha256, unpack it into
    `<plugins-dir>/<os>/<arch>/<id>-v<version><ext>`, enable it in the config and reload."""
    body = body or InstallBody()
    if isolation and body.isolation and isolation != body.isolation:
        raise InvalidRequest(
            f"isolation query {isolation!r} does not match the body's {body.isolation!r}"
        )
    request = InstallRequest(
        plugin_id,
        version=requested_version(version, body.version),
        source=source,
        isolation=isolation or body.isolation,
    )
    detail = f"store {source or 'any source'}, version {request.version or 'latest'}"
    try:
        with audited(service, Caller.of(http_request), "plugin.install", plugin_id, detail):
            return StoreInstaller(service).install(request).reply()
    except StoreSourceRequired as exc:
        raise ApiError(
            exc.http_status, exc.code, exc.message, extra={"sources": exc.sources}
        ) from None
