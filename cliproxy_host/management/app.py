"""The management REST API (docs/ABI.md, management API) as a FastAPI application: the app
factory that puts the routers, the error handlers and the auth dependency together."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..host.service import HostService
from .body_limit import BodyLimit
from .deps import bind
from .errors import install_error_handlers
from .header_limit import HeaderLimit
from .openapi import SECURITY, drop_validation_errors
from .plugin_routes import PluginRoutes
from .routers import plugin_config, plugin_owned, plugins

Auth = Callable[[Request], Awaitable[None]]

DESCRIPTION = (
    "List, enable, configure and remove native plugins; plugin-owned routes are served "
    "under /v0/management and /v0/resource/plugins/<id>. Every route requires the "
    "management key (Authorization: Bearer <key> or X-Management-Key)."
)


def create_app(service: HostService, auth: Auth) -> FastAPI:
    """The app serving `service`; every route requires `auth` to pass.

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
        dependencies=[Depends(auth), *SECURITY],
        # A trailing-slash redirect would answer paths that exist nowhere (like ".." ones).
        redirect_slashes=False,
    )
    install_error_handlers(app)
    drop_validation_errors(app)
    # Read per request: a reloaded config's cap applies at once.
    app.add_middleware(BodyLimit, cap=lambda: service.config.remote_management.max_body_bytes)
    app.add_middleware(HeaderLimit)  # added last: it runs first
    host_routers = (plugins.router, plugin_config.router)
    routes = PluginRoutes(
        service.host, lambda method, path: _is_host_route(host_routers, method, path)
    )
    service.host.add_listener(routes.rebuild)
    bind(app, service, routes)
    # The host's own resources first: plugin_owned's catch-all must not shadow them.
    for router in (*host_routers, plugin_owned.router):
        app.include_router(router)
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
