"""The plugins resource: list them, delete one, enable or disable one."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..audit import Caller, audited
from ..deps import Links, PluginId, Routes, Service, find_plugin
from ..errors import error_responses
from ..json_body import JsonBodyRoute
from ..models import DeleteResult, EnabledBody, PluginEntry, PluginList
from ..plugin_routes import BASE_PATH
from ..views import plugin_entry, plugin_list

PLUGINS = f"{BASE_PATH}/plugins"

# JsonBodyRoute: a body is checked (Content-Type, JSON, depth) before FastAPI parses it.
router = APIRouter(route_class=JsonBodyRoute)


@router.get(
    PLUGINS,
    response_model=PluginList,
    summary="List plugins",
    responses=error_responses(401, 403, 413, 414, 429, 431, 500),
)
async def list_plugins(service: Service, routes: Routes, links: Links) -> Response:
    """Every discovered, configured or registered plugin, sorted by ID."""
    # On the event loop, not the thread pool: it takes only short locks (the host's
    # state, each plugin's health), and a hand-off to a pool thread then contending
    # for the GIL cost more than the listing itself.
    listing = plugin_list(service, routes, links)
    # Serialised here: the model was validated as it was built, and FastAPI would
    # validate it again against response_model (about half the cost of the request
    # with 50 plugins). response_model still documents it.
    return Response(listing.model_dump_json(), media_type="application/json")


@router.delete(
    f"{PLUGINS}/{{plugin_id}}",
    response_model=DeleteResult,
    summary="Delete a plugin",
    responses=error_responses(400, 401, 403, 404, 409, 413, 414, 429, 431, 500),
)
def delete_plugin(plugin_id: PluginId, service: Service, request: Request) -> DeleteResult:
    """Unload the plugin, delete its files (every version) and drop its config entry."""
    with audited(service, Caller.of(request), "plugin.delete", plugin_id):
        find_plugin(service, plugin_id)
        done = service.delete(plugin_id)
    return DeleteResult(
        id=plugin_id,
        deleted_files=[str(p) for p in done.files],
        config_removed=done.config_removed,
    )


@router.patch(
    f"{PLUGINS}/{{plugin_id}}/enabled",
    response_model=PluginEntry,
    summary="Enable or disable a plugin",
    responses=error_responses(400, 401, 403, 404, 409, 413, 414, 415, 429, 431, 500),
)
def set_enabled(
    plugin_id: PluginId,
    body: EnabledBody,
    *,
    service: Service,
    routes: Routes,
    links: Links,
    request: Request,
) -> PluginEntry:
    """Write `enabled` to the config file and load or unload the plugin accordingly."""
    action = "plugin.enable" if body.enabled else "plugin.disable"
    with audited(service, Caller.of(request), action, plugin_id):
        find_plugin(service, plugin_id)
        service.set_enabled(plugin_id, body.enabled)
    return plugin_entry(service, routes, links, find_plugin(service, plugin_id))
