"""The store's list (GET /v0/management/plugin-store, `cliproxy-host store list`): every
source read in parallel within the timeout, each entry with what is installed here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..config import HostConfig
from ..discovery import compare_versions, discover
from ..errors import StoreRegistryFailed
from ..host.listing import PluginInfo
from .install import fetcher_for, read_sources
from .registry import bare_version
from .sources import Source, sources_of


@dataclass
class _Local:
    installed: bool = False
    installed_version: str = ""
    path: str = ""
    configured: bool = False
    registered: bool = False
    enabled: bool = False
    store_managed: bool = False
    source_id: str = ""
    source_url: str = ""


def _local(config: HostConfig, infos: Iterable[PluginInfo] | None) -> dict[str, _Local]:
    out: dict[str, _Local] = {}
    pins = {pid: pin for pid, e in config.plugins.configs.items() if (pin := e.pinned_version)}
    for pid, found in discover(config.plugins_dir(), pins).files.items():
        out[pid] = _Local(True, found.version or "", str(found.path), enabled=True)
    for pid, entry in config.plugins.configs.items():
        local = out.setdefault(pid, _Local())
        local.configured = True
        local.enabled = entry.enabled
        if entry.store is not None:
            extra = entry.store.model_extra or {}
            local.store_managed = True
            local.source_id = str(extra.get("source-id") or "").strip()
            local.source_url = str(extra.get("source-url") or "").strip()
    for info in infos or ():
        if info.registered:
            local = out.setdefault(info.id, _Local())
            local.installed = local.registered = True
            local.installed_version = str(
                (info.metadata or {}).get("version") or info.version or ""
            )
    return out


def _update_available(installed: str, latest: str) -> bool:
    installed, latest = bare_version(installed), bare_version(latest)
    if not installed or not latest or installed == latest:
        return False
    return compare_versions(installed, latest) < 0


def _source_status(
    local: _Local, sources: list[Source], entry_source: str, listed_by: int
) -> tuple[str, str, bool]:
    """(installed_source_id, install_source_status, update allowed), as the Go host says."""
    if not (local.installed or local.configured or local.registered):
        return "", "", True
    known: str | None = None
    if local.source_id:
        match = next((s for s in sources if s.id == local.source_id), None)
        if match is None or not local.source_url or match.url == local.source_url:
            known = local.source_id
    elif local.source_url:
        known = next((s.id for s in sources if s.url == local.source_url), None)
    if known is not None:
        return (known, "matched", True) if known == entry_source else (known, "different", False)
    if local.store_managed or listed_by > 1:
        return "", "unknown", False
    return "", "assumed", True


def store_list(
    config: HostConfig, infos: Iterable[PluginInfo] | None = None, *, with_versions: bool = False
) -> dict[str, Any]:
    """The Go host's list body; StoreRegistryFailed when no source could be read.
    `with_versions` adds each entry's `versions` offered, its own version first (the console's
    version picker; the API's body stays the Go host's)."""
    sources = sources_of(config)
    results = read_sources(fetcher_for(config), sources)
    errors = [
        {"source_id": s.id, "source_name": s.name, "source_url": s.url, "message": r}
        for s, r in zip(sources, results, strict=True)
        if isinstance(r, str)
    ]
    listed = [
        (s, p) for s, r in zip(sources, results, strict=True) if not isinstance(r, str) for p in r
    ]
    if not listed and errors:
        raise StoreRegistryFailed(errors[0]["message"])
    local = _local(config, infos)
    counts: dict[str, int] = {}
    for _, plugin in listed:
        counts[plugin.id] = counts.get(plugin.id, 0) + 1
    entries = []
    for source, plugin in listed:
        here = local.get(plugin.id, _Local())
        installed_source, status, may_update = _source_status(
            here, sources, source.id, counts[plugin.id]
        )
        entry: dict[str, Any] = {
            "store_id": f"{source.id}/{plugin.id}",
            "source_id": source.id,
            "source_name": source.name,
            "source_url": source.url,
            "id": plugin.id,
            "name": plugin.name,
            "description": plugin.description,
            "author": plugin.author,
            "version": plugin.version,
            "repository": plugin.repository,
            "install_type": plugin.install_type,
            "auth_required": plugin.auth_required,
            "auth_configured": False,  # plugins.store-auth is not supported by this host
            "installed": here.installed,
            "installed_version": here.installed_version,
            "path": here.path,
            "configured": here.configured,
            "registered": here.registered,
            "enabled": here.enabled,
            "effective_enabled": config.plugins.enabled and here.enabled and here.registered,
            "update_available": may_update
            and _update_available(here.installed_version, plugin.version),
        }
        platforms = [{"goos": o, "goarch": a} for o, a in plugin.platforms()]
        optional = {
            "platforms": platforms,
            "logo": plugin.logo,
            "homepage": plugin.homepage,
            "license": plugin.license,
            "tags": plugin.tags,
            "installed_source_id": installed_source,
            "install_source_status": status,
        }
        entry.update({k: v for k, v in optional.items() if v})
        if with_versions:
            entry["versions"] = plugin.versions_offered()
        entries.append(entry)
    body: dict[str, Any] = {
        "plugins_enabled": config.plugins.enabled,
        "plugins_dir": str(config.plugins_dir()),
        "sources": [s.as_dict() for s in sources],
        "plugins": entries,
    }
    if errors:
        body["source_errors"] = errors
    return body
