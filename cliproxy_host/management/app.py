"""The management REST API (ABI.md section 6) as a FastAPI application."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Annotated, Any, Final

from fastapi import Body, Depends, FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..config.schema import ConfigError
from ..discovery import is_valid_id
from ..errors import InvalidPluginId, PluginBusy, PluginError, PluginNotFound
from ..host.facade import PluginInfo
from ..host.registry import ConfigField, check_settings
from ..host.service import HostService
from .errors import ApiError, ErrorBody, api_error_handler
from .models import (
    ConfigFieldOut,
    DeleteResult,
    EnabledBody,
    MenuOut,
    MetadataOut,
    PluginConfigBody,
    PluginEntry,
    PluginList,
)
from .plugin_routes import BASE_PATH, METHODS, RESOURCE_BASE, PluginRoutes

PLUGINS: Final = f"{BASE_PATH}/plugins"

PluginId = Annotated[str, Path(description="the plugin ID (file name without extension)")]
Auth = Callable[[Request], Awaitable[None]]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody, "description": HTTPStatus(s).phrase} for s in statuses}


def _field_out(f: ConfigField) -> ConfigFieldOut:
    return ConfigFieldOut(
        name=f.name, type=f.type, enum_values=list(f.enum_values), description=f.description
    )


def create_app(service: HostService, auth: Auth) -> FastAPI:
    """The app serving `service`; every route requires `auth` to pass."""
    host = service.host

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
        description="List, enable, configure and remove native plugins; plugin-owned routes "
        "are served under /v0/management and /v0/resource/plugins/<id>. Every route "
        "requires the management key (Authorization: Bearer <key> or X-Management-Key).",
        lifespan=lifespan,
        dependencies=[Depends(auth)],
        # A trailing-slash redirect would answer paths that exist nowhere (like ".." ones).
        redirect_slashes=False,
    )
    app.add_exception_handler(ApiError, api_error_handler)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return ApiError(400, "invalid_body", f"{where}: {first['msg']}").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return ApiError(exc.status_code, code, str(exc.detail), headers=exc.headers).response()

    routes = PluginRoutes(host, lambda method, path: _is_host_route(app, method, path))
    host.add_listener(routes.rebuild)

    def entry(info: PluginInfo) -> PluginEntry:
        cfg = service.config
        record = host.registration(info.id)
        meta = record.metadata if record else None
        fields = [_field_out(f) for f in meta.config_fields] if meta else []
        return PluginEntry(
            id=info.id,
            path=info.path or "",
            configured=info.configured,
            registered=info.registered,
            enabled=info.enabled,
            effective_enabled=cfg.plugins.enabled and info.enabled and info.registered,
            supports_oauth=info.capabilities.get("auth_provider") is True,
            oauth_provider=routes.oauth_provider(info.id),
            logo=meta.logo if meta else "",
            config_fields=fields,
            menus=[
                MenuOut(path=m.path, menu=m.menu, description=m.description)
                for m in routes.menus(info.id)
            ],
            metadata=MetadataOut(
                name=meta.name,
                version=meta.version,
                author=meta.author,
                github_repository=meta.github_repository,
                logo=meta.logo,
                config_fields=fields,
            )
            if meta
            else None,
            priority=info.priority,
            version=info.version,
            loading=info.loading,
            error=info.error,
            isolation=info.isolation,
            state=info.state,
            restarts=info.restarts,
            last_error=info.last_error,
            last_signal=info.last_signal,
        )

    def find(plugin_id: str) -> PluginInfo:
        if not is_valid_id(plugin_id):
            raise ApiError(400, "invalid_plugin_id", f"{plugin_id!r} is not a valid plugin ID")
        for info in host.plugins():
            if info.id == plugin_id:
                return info
        raise ApiError(
            404,
            "plugin_not_found",
            f"no plugin {plugin_id} under {service.config.plugins_dir()} or in the config",
        )

    def guarded(action: Callable[[], Any]) -> Any:
        try:
            return action()
        except (InvalidPluginId, PluginBusy, PluginNotFound) as exc:
            raise ApiError(exc.http_status, exc.code, exc.message) from None
        except ConfigError as exc:
            raise ApiError(400, "invalid_config", str(exc)) from None
        except OSError as exc:
            raise ApiError(500, "config_save_failed", f"{exc.strerror}: {exc.filename}") from None

    def check_fields(plugin_id: str, settings: dict[str, Any]) -> None:
        record = host.registration(plugin_id)
        if record is None:
            return
        problems = check_settings(record.metadata.config_fields, settings)
        if problems:
            raise ApiError(
                400,
                "invalid_config",
                f"plugins.configs.{plugin_id}." + f"; plugins.configs.{plugin_id}.".join(problems),
            )

    def config_of(plugin_id: str) -> dict[str, Any]:
        return (
            service.config.plugin_entry(plugin_id).as_mapping()
            if (plugin_id in service.config.plugins.configs)
            else {}
        )

    @app.get(
        PLUGINS,
        response_model=PluginList,
        summary="List plugins",
        responses=_errors(401, 403, 429, 500),
    )
    async def list_plugins() -> Response:
        """Every discovered, configured or registered plugin, sorted by ID."""
        # On the event loop, not the thread pool: it takes only short locks (the host's
        # state, each plugin's health), and a hand-off to a pool thread then contending
        # for the GIL cost more than the listing itself.
        cfg = service.config
        infos = sorted(host.plugins(), key=lambda i: i.id)
        listing = PluginList(
            plugins_enabled=cfg.plugins.enabled,
            plugins_dir=str(cfg.plugins_dir()),
            plugins=[entry(i) for i in infos],
        )
        # Serialised here: the model was validated as it was built, and FastAPI would
        # validate it again against response_model (about half the cost of the request
        # with 50 plugins). response_model still documents it.
        return Response(listing.model_dump_json(), media_type="application/json")

    @app.delete(
        f"{PLUGINS}/{{plugin_id}}",
        response_model=DeleteResult,
        summary="Delete a plugin",
        responses=_errors(400, 401, 403, 404, 409, 429, 500),
    )
    def delete_plugin(plugin_id: PluginId) -> DeleteResult:
        """Unload the plugin, delete its files (every version) and drop its config entry."""
        find(plugin_id)
        done = guarded(lambda: service.delete(plugin_id))
        return DeleteResult(
            id=plugin_id,
            deleted_files=[str(p) for p in done.files],
            config_removed=done.config_removed,
        )

    @app.patch(
        f"{PLUGINS}/{{plugin_id}}/enabled",
        response_model=PluginEntry,
        summary="Enable or disable a plugin",
        responses=_errors(400, 401, 403, 404, 409, 429, 500),
    )
    def set_enabled(plugin_id: PluginId, body: EnabledBody) -> PluginEntry:
        """Write `enabled` to the config file and load or unload the plugin accordingly."""
        find(plugin_id)
        guarded(lambda: service.set_enabled(plugin_id, body.enabled))
        return entry(find(plugin_id))

    @app.get(
        f"{PLUGINS}/{{plugin_id}}/config",
        response_model=PluginConfigBody,
        summary="Read a plugin's config",
        responses=_errors(400, 401, 403, 404, 429),
    )
    def get_config(plugin_id: PluginId) -> dict[str, Any]:
        """The plugin's mapping under plugins.configs.<id> ({} when it has none)."""
        find(plugin_id)
        return config_of(plugin_id)

    @app.put(
        f"{PLUGINS}/{{plugin_id}}/config",
        response_model=PluginConfigBody,
        summary="Replace a plugin's config",
        responses=_errors(400, 401, 403, 404, 409, 429, 500),
    )
    def put_config(plugin_id: PluginId, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """Replace the plugin's whole config mapping; the plugin is reconfigured."""
        find(plugin_id)
        check_fields(plugin_id, body)
        guarded(lambda: service.replace_config(plugin_id, body))
        return config_of(plugin_id)

    @app.patch(
        f"{PLUGINS}/{{plugin_id}}/config",
        response_model=PluginConfigBody,
        summary="Merge into a plugin's config",
        responses=_errors(400, 401, 403, 404, 409, 429, 500),
    )
    def patch_config(
        plugin_id: PluginId, body: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        """Shallow merge into the plugin's config; a null value deletes that key."""
        find(plugin_id)
        check_fields(plugin_id, body)
        guarded(lambda: service.patch_config(plugin_id, body))
        return config_of(plugin_id)

    async def forward(plugin_id: str, request: Request) -> Response:
        body = await request.body()
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name, []).append(value)
        query: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            query.setdefault(name, []).append(value)
        try:
            status, out_headers, data = await run_in_threadpool(
                lambda: routes.handle(
                    plugin_id,
                    method=request.method,
                    path=request.url.path,
                    headers=headers,
                    query=query,
                    body=body,
                )
            )
        except PluginError as exc:
            raise ApiError(502, "plugin_error", str(exc)) from None
        response = Response(content=data, status_code=status)
        for name, values in out_headers.items():
            for value in values:
                response.headers.append(name, value)
        return response

    @app.api_route(f"{BASE_PATH}/{{rest:path}}", methods=sorted(METHODS), include_in_schema=False)
    async def plugin_route(request: Request, rest: str) -> Response:
        owner = routes.route_owner(request.method, request.url.path)
        if owner is None:
            raise ApiError(404, "not_found", f"no route {request.method} {request.url.path}")
        return await forward(owner, request)

    @app.api_route(
        f"{RESOURCE_BASE}/{{plugin_id}}/{{rest:path}}",
        methods=["GET", "HEAD"],
        include_in_schema=False,
    )
    async def plugin_resource(request: Request, plugin_id: str, rest: str) -> Response:
        if not routes.has_resource(plugin_id, "/" + rest):
            raise ApiError(404, "not_found", f"plugin {plugin_id} serves no resource /{rest}")
        return await forward(plugin_id, request)

    return app


def _is_host_route(app: FastAPI, method: str, path: str) -> bool:
    """Whether one of the host's own (schema-listed) routes would answer this request."""
    return any(
        isinstance(route, APIRoute)
        and route.include_in_schema
        and method in (route.methods or ())
        and route.path_regex.match(path) is not None
        for route in app.routes
    )
