"""What the console shows of a plugin: its listing entry, registration, settings, logo and
the menus and resources it can open, gathered once per page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from ..host.facade import PluginInfo
from ..host.registry import ConfigField
from ..host.service import HostService
from ..management.plugin_routes import RESOURCE_BASE, PluginRoutes

__all__ = ["MenuLink", "PluginView", "open_url", "plugin_view", "plugin_views"]

# A logo the console can show without fetching anything from elsewhere: an image inline
# in the metadata. Anything else (a URL) would break air-gapped use and tell a third
# party who opens the console; a logo that is one of the plugin's resources is served.
_DATA_LOGO: Final = re.compile(r"data:image/(png|gif|jpeg|webp);base64,[A-Za-z0-9+/=]+")


@dataclass(frozen=True)
class MenuLink:
    label: str
    description: str
    url: str  # the console's URL that opens it in the viewer


@dataclass(frozen=True)
class PluginView:
    id: str
    name: str
    version: str
    author: str
    repository: str
    logo: str | None  # an <img> src, or None: the initial stands in
    enabled: bool  # what the config says
    status: str  # serving, disabled, loading, not loaded, plugins off
    health: str  # running, restarting, unhealthy, fused, or "-" when not loaded
    priority: int
    isolation: str
    restarts: int
    last_error: str | None
    error: str | None  # why it is not loaded
    warnings: list[str]
    fields: tuple[ConfigField, ...]
    settings: dict[str, Any]
    menus: list[MenuLink]

    @property
    def initial(self) -> str:
        return (self.name or self.id)[:1].upper()


def open_url(plugin_id: str, path: str) -> str:
    """The console's URL that opens one of a plugin's resources or menus in the viewer."""
    return f"/console/plugins/{plugin_id}/open?path={quote(path, safe='/')}"


def _status(info: PluginInfo, plugins_enabled: bool) -> str:
    if info.loading:
        return "loading"
    if not info.enabled:
        return "disabled"
    if not info.registered:
        return "not loaded"
    return "serving" if plugins_enabled else "plugins off"


def _menus(routes: PluginRoutes, plugin_id: str) -> list[MenuLink]:
    """Labelled menus first (routes and resources), then resources that have no label."""
    resources = routes.resources(plugin_id)
    # A menu on a route the browser cannot open (POST, ...) would be a dead link.
    openable = [
        m
        for m in routes.menus(plugin_id)
        if m.path in resources or routes.route_owner("GET", m.path) == plugin_id
    ]
    menus = [MenuLink(m.menu, m.description, open_url(plugin_id, m.path)) for m in openable]
    labelled = {m.path for m in openable}
    menus.extend(
        MenuLink(path.removeprefix(f"{RESOURCE_BASE}/{plugin_id}"), "", open_url(plugin_id, path))
        for path in resources
        if path not in labelled
    )
    return menus


def _logo(routes: PluginRoutes, plugin_id: str, logo: str) -> str | None:
    if _DATA_LOGO.fullmatch(logo):
        return logo
    for path in routes.resources(plugin_id):
        if logo in (path, path.removeprefix(f"{RESOURCE_BASE}/{plugin_id}")):
            return open_url(plugin_id, path)
    return None


def _view(service: HostService, routes: PluginRoutes, info: PluginInfo) -> PluginView:
    cfg = service.config
    registration = service.host.registration(info.id)
    meta = registration.metadata if registration else None
    settings = cfg.plugin_entry(info.id).as_mapping() if info.id in cfg.plugins.configs else {}
    return PluginView(
        id=info.id,
        name=meta.name if meta else info.id,
        version=info.version or (meta.version if meta else "") or "-",
        author=meta.author if meta else "",
        repository=meta.github_repository if meta else "",
        logo=_logo(routes, info.id, meta.logo) if meta else None,
        enabled=info.enabled,
        status=_status(info, cfg.plugins.enabled),
        health=info.state or "-",
        priority=info.priority,
        isolation=info.isolation,
        restarts=info.restarts,
        last_error=info.last_error,
        error=info.error,
        warnings=list(info.warnings),
        fields=service.host.declared_fields(info.id) or (),
        settings={str(k): v for k, v in settings.items()},
        menus=_menus(routes, info.id),
    )


def plugin_views(service: HostService, routes: PluginRoutes) -> list[PluginView]:
    """Every discovered or configured plugin, sorted by ID."""
    infos = sorted(service.host.plugins(), key=lambda i: i.id)
    return [_view(service, routes, info) for info in infos]


def plugin_view(service: HostService, routes: PluginRoutes, plugin_id: str) -> PluginView | None:
    """One plugin, or None when nothing is known of the ID."""
    info = service.host.plugin(plugin_id)
    return None if info is None else _view(service, routes, info)
