"""What the routers get from the app (the HostService, the plugin routes) and the lookup of
the plugin a path names."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Path, Request

from ..discovery import ID_PATTERN, is_valid_id
from ..errors import InvalidPluginId, PluginNotFound
from ..host.facade import PluginInfo
from ..host.service import HostService
from .plugin_routes import PluginRoutes
from .resource_links import ResourceLinks

# The pattern is declared, not enforced by FastAPI: find_plugin answers invalid_plugin_id.
PluginId = Annotated[
    str,
    Path(
        description="the plugin ID (file name without extension)",
        json_schema_extra={"pattern": f"^{ID_PATTERN}$"},
    ),
]


def bind(
    app: FastAPI, service: HostService, routes: PluginRoutes, links: ResourceLinks | None
) -> None:
    """Make `service`, `routes` and `links` what the dependencies below hand to every route
    of app (links None: an app that is never served, whose list has no resource URLs)."""
    app.state.service = service
    app.state.plugin_routes = routes
    app.state.resource_links = links


# async: FastAPI would run a plain function in its thread pool, a hand-off that costs
# more than the attribute read.
async def _service(request: Request) -> HostService:
    service: HostService = request.app.state.service
    return service


async def _routes(request: Request) -> PluginRoutes:
    routes: PluginRoutes = request.app.state.plugin_routes
    return routes


async def _links(request: Request) -> ResourceLinks | None:
    links: ResourceLinks | None = request.app.state.resource_links
    return links


Service = Annotated[HostService, Depends(_service)]
Routes = Annotated[PluginRoutes, Depends(_routes)]
Links = Annotated[ResourceLinks | None, Depends(_links)]


def find_plugin(service: HostService, plugin_id: str) -> PluginInfo:
    """The plugin the path names, or InvalidPluginId / PluginNotFound.

    Called in the route rather than as a dependency, so that a bad body is still reported
    before an unknown ID, as it always was.
    """
    if not is_valid_id(plugin_id):
        raise InvalidPluginId(f"{plugin_id!r} is not a valid plugin ID")
    info = service.host.plugin(plugin_id)
    if info is None:
        raise PluginNotFound(
            f"no plugin {plugin_id} under {service.config.plugins_dir()} or in the config"
        )
    return info
