"""A plugin's config, `plugins.configs.<id>` of the config file: read, replace, merge."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from ...config import FILE_ONLY_KEYS
from ...errors import InvalidConfig
from ...host.registry import check_settings
from ...host.service import HostService
from ..audit import Caller, audited
from ..deps import PluginId, Service, find_plugin
from ..errors import error_responses
from ..json_body import JsonBodyRoute
from ..models import PluginConfigBody
from ..plugin_routes import BASE_PATH

CONFIG = f"{BASE_PATH}/plugins/{{plugin_id}}/config"

# JsonBodyRoute: a body is checked (Content-Type, JSON, depth) before FastAPI parses it.
router = APIRouter(route_class=JsonBodyRoute)


def check_plugin_settings(service: HostService, plugin_id: str, settings: dict[str, Any]) -> None:
    """Refuse settings that break the plugin's declared ConfigFields (InvalidConfig naming
    each field): those it declares now, or declared when last loaded in this process; a
    plugin that never loaded here declares none (it is checked when it loads)."""
    fields = service.host.declared_fields(plugin_id)
    if fields is None:
        return
    problems = check_settings(fields, settings)
    if problems:
        raise InvalidConfig(
            f"plugins.configs.{plugin_id}." + f"; plugins.configs.{plugin_id}.".join(problems)
        )


def config_of(service: HostService, plugin_id: str) -> dict[str, Any]:
    """The plugin's mapping under plugins.configs.<id>, {} when it has none; without the
    keys only the file sets (FILE_ONLY_KEYS: a program's command line and environment)."""
    cfg = service.config
    if plugin_id not in cfg.plugins.configs:
        return {}
    mapping = cfg.plugin_entry(plugin_id).as_mapping()
    return {key: value for key, value in mapping.items() if key not in FILE_ONLY_KEYS}


@router.get(
    CONFIG,
    response_model=PluginConfigBody,
    summary="Read a plugin's config",
    responses=error_responses(400, 401, 403, 404, 413, 414, 429, 431),
)
def get_config(plugin_id: PluginId, service: Service) -> dict[str, Any]:
    """The plugin's mapping under plugins.configs.<id> ({} when it has none)."""
    find_plugin(service, plugin_id)
    return config_of(service, plugin_id)


@router.put(
    CONFIG,
    response_model=PluginConfigBody,
    summary="Replace a plugin's config",
    responses=error_responses(400, 401, 403, 404, 409, 413, 414, 415, 429, 431, 500),
)
def put_config(
    plugin_id: PluginId,
    body: Annotated[dict[str, Any], Body()],
    service: Service,
    request: Request,
) -> dict[str, Any]:
    """Replace the plugin's whole config mapping; the plugin is reconfigured."""
    with audited(service, Caller.of(request), "config.replace", plugin_id):
        find_plugin(service, plugin_id)
        check_plugin_settings(service, plugin_id, body)
        service.replace_config(plugin_id, body)
    return config_of(service, plugin_id)


@router.patch(
    CONFIG,
    response_model=PluginConfigBody,
    summary="Merge into a plugin's config",
    responses=error_responses(400, 401, 403, 404, 409, 413, 414, 415, 429, 431, 500),
)
def patch_config(
    plugin_id: PluginId,
    body: Annotated[dict[str, Any], Body()],
    service: Service,
    request: Request,
) -> dict[str, Any]:
    """Shallow merge into the plugin's config; a null value deletes that key."""
    with audited(service, Caller.of(request), "config.patch", plugin_id):
        find_plugin(service, plugin_id)
        check_plugin_settings(service, plugin_id, body)
        service.patch_config(plugin_id, body)
    return config_of(service, plugin_id)
