"""The listing as the API shows it: a PluginInfo plus its registration, menus and OAuth
provider, turned into the Go host's PluginEntry."""

from __future__ import annotations

from ..host.facade import PluginInfo
from ..host.registry import ConfigField
from ..host.service import HostService
from .models import (
    ConfigFieldOut,
    ConfigStoreOut,
    MenuOut,
    MetadataOut,
    PluginEntry,
    PluginList,
    ResourceLinkOut,
)
from .plugin_routes import PluginRoutes
from .resource_links import ResourceLinks


def plugin_list(
    service: HostService, routes: PluginRoutes, links: ResourceLinks | None
) -> PluginList:
    """Every discovered, configured or registered plugin, sorted by ID."""
    cfg = service.config
    infos = sorted(service.host.plugins(), key=lambda i: i.id)
    store = service.config_store_status
    return PluginList(
        plugins_enabled=cfg.plugins.enabled,
        plugins_dir=str(cfg.plugins_dir()),
        plugins_dir_error=service.host.plugins_dir_error,
        config_store=None if store is None else ConfigStoreOut(**vars(store)),
        plugins=[plugin_entry(service, routes, links, i) for i in infos],
    )


def plugin_entry(
    service: HostService, routes: PluginRoutes, links: ResourceLinks | None, info: PluginInfo
) -> PluginEntry:
    """One plugin as the list shows it; links makes its resource links (None: no server
    serves them, as in `plugins --json`: url and expires_at are null)."""
    record = service.host.registration(info.id)
    meta = record.metadata if record else None
    fields = [_field_out(f) for f in meta.config_fields] if meta else []
    return PluginEntry(
        id=info.id,
        path=info.path or "",
        configured=info.configured,
        registered=info.registered,
        enabled=info.enabled,
        effective_enabled=service.config.plugins.enabled and info.enabled and info.registered,
        supports_oauth=info.capabilities.get("auth_provider") is True,
        oauth_provider=routes.oauth_provider(info.id),
        logo=meta.logo if meta else "",
        config_fields=fields,
        menus=[
            MenuOut(path=m.path, menu=m.menu, description=m.description)
            for m in routes.menus(info.id)
        ],
        resource_links=_resource_links(service, routes, links, info.id),
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
        warnings=info.warnings,
        sha256=info.sha256,
        signed_by=info.signed_by,
    )


def _field_out(f: ConfigField) -> ConfigFieldOut:
    return ConfigFieldOut(
        name=f.name, type=f.type, enum_values=list(f.enum_values), description=f.description
    )


def _resource_links(
    service: HostService, routes: PluginRoutes, links: ResourceLinks | None, plugin_id: str
) -> list[ResourceLinkOut]:
    paths = routes.resources(plugin_id)
    if links is None:
        return [ResourceLinkOut(path=p, url=None, expires_at=None) for p in paths]
    # Read per listing: a reloaded TTL applies to the next list.
    ttl = service.config.remote_management.resource_link_ttl
    made = (links.link(p, ttl) for p in paths)
    return [ResourceLinkOut(path=k.path, url=k.url, expires_at=k.expires_at) for k in made]
