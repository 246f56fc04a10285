"""The management REST API (docs/ABI.md, management API) as a FastAPI application: the app
factory that puts the routers, the error handlers and the auth dependency together."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..host.service import HostService
from ..web.body_limit import BodyLimit
from ..web.header_limit import HeaderLimit
from .auth import ManagementAuth
from .deps import bind
from .docs_ui import docs_router
from .errors import install_error_handlers, refusal
from .openapi import SECURITY, drop_validation_errors
from .plugin_routes import PluginRoutes
from .resource_links import ResourceGate, ResourceLinks
from .routers import (
    audit,
    metrics,
    plugin_config,
    plugin_owned,
    plugin_store,
    plugin_upload,
    plugins,
)
from .routers.metrics import MetricsGate

log = logging.getLogger(__name__)

API_NAME = "the management API"  # in the refusals of the caps
DESCRIPTION = (
    "List, enable, configure and remove native plugins; plugin-owned routes are served "
    "under /v0/management and /v0/resource/plugins/<id>. Every /v0/management route "
    "requires the management key (Authorization: Bearer <key> or X-Management-Key). "
    "A plugin resource takes the key or the signed link of its list entry "
    "(resource_links). These docs and this document need no key."
)


def create_app(service: HostService, auth: ManagementAuth) -> FastAPI:
    """The app serving `service`. Every route passes `auth`'s network rule; the management
    routes need its key; plugin resources the key or a signed link (or nothing, with
    remote-management.open-plugin-resources); the docs pages no key.

    The service starts with the app (plugins load in the background) and stops with it.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        # What start-up built (FastAPI's routes and schemas, the loaded plugins) lives as
        # long as the server: out of the collector's sight, a full collection no longer
        # walks it, which took tens of milliseconds out of a request now and then.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="cliproxy-host management API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # docs_ui serves the docs from local files, under the network rule.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # A trailing-slash redirect would answer paths that exist nowhere (like ".." ones).
        redirect_slashes=False,
    )
    install_error_handlers(app)
    drop_validation_errors(app)
    # Read per request: a reloaded config's cap applies at once.
    app.add_middleware(
        BodyLimit,
        cap=lambda: service.config.remote_management.max_body_bytes,
        api=API_NAME,
        cap_key="remote-management.max-body-bytes",
        refuse=refusal,
        exempt=plugin_upload.is_upload,  # capped by plugins.max-upload-bytes instead
    )
    app.add_middleware(HeaderLimit, api=API_NAME, refuse=refusal)  # added last: it runs first
    host_routers = (
        plugins.router,
        plugin_config.router,
        plugin_store.router,
        plugin_upload.router,
        audit.router,
    )
    routes = PluginRoutes(
        service.host, lambda method, path: _is_host_route(host_routers, method, path)
    )
    service.host.add_listener(routes.rebuild)
    # Read once, like the key and allow-remote: access rules change with a restart.
    open_resources = service.config.remote_management.open_plugin_resources
    if open_resources:
        log.warning(
            "remote-management.open-plugin-resources is true: plugin resources under "
            "/v0/resource/plugins/ are served without the management key or a signed link"
        )
    links = ResourceLinks(open_resources=open_resources)
    bind(app, service, routes, links)
    keyed = [Depends(auth), *SECURITY]
    # The host's own resources first: plugin_owned's catch-all must not shadow them.
    for router in (*host_routers, plugin_owned.router):
        app.include_router(router, dependencies=keyed)
    app.include_router(plugin_owned.resources, dependencies=[Depends(ResourceGate(auth, links))])
    # Read once, like the management key.
    metrics_key = service.config.remote_management.metrics_key
    app.include_router(
        metrics.router, dependencies=[Depends(MetricsGate(auth, metrics_key)), *SECURITY]
    )
    app.include_router(docs_router(app, auth.network))
    return app


def _is_host_route(routers: Iterable[APIRouter], method: str, path: str) -> bool:
    """Whether one of the host's own (schema-listed) routes would answer this request."""
    # The routers' own routes, not app.routes: FastAPI may keep an included router as one
    # opaque entry there. They are included without a prefix, so their paths are final.
    return any(
        isinstance(route, APIRoute)
        and route.include_in_schema
        and method in (route.methods or ())
        and route.path_regex.match(path) is not None
        for router in routers
        for route in router.routes
    )
