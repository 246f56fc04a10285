"""Listing views: how one plugin looks from outside, and why it cannot take a call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..abi import LIBRARY_SUFFIX
from ..callbacks.permissions import CREDENTIAL_CALLBACKS, compile_grant, key_of
from ..config import HostConfig
from ..discovery import PluginFile
from ..errors import PluginError, PluginNotFound, PluginNotLoaded
from .loader import Slot


class PluginInfo(BaseModel):
    """One discovered or configured plugin, as listings show it."""

    id: str
    path: str | None
    version: str | None
    configured: bool
    enabled: bool
    registered: bool
    loading: bool
    priority: int
    metadata: dict[str, Any] | None
    capabilities: dict[str, Any]
    error: str | None  # why it is not loaded, or what last went wrong in loading it
    isolation: str
    state: str | None  # running | restarting | unhealthy | fused, while loaded
    restarts: int
    last_error: str | None  # the last runtime failure (crash, timeout, open circuit)
    last_signal: str | None  # the signal that killed its worker last, if any
    warnings: list[str] = []  # what registered but cannot work (an executor without formats)
    # What the trust checks found in the loaded bytes (only when a pin or trusted keys apply).
    sha256: str | None = None
    signed_by: str | None = None  # the trusted key (as in plugins.trusted-keys) that signed it


def plugins_off_reason(cfg: HostConfig) -> str | None:
    """Why no plugin loads at all when `plugins.enabled` is false, naming the file; a key
    left out (an empty file) is said to default to false, since nothing else shows it."""
    if cfg.plugins.enabled:
        return None
    source = cfg.source_path or "<memory>"
    if "enabled" in cfg.plugins.model_fields_set:
        return f"{source}: plugins.enabled is false, so no plugin loads"
    return (
        f"{source}: plugins.enabled is not set and defaults to false, so no plugin loads;"
        " set plugins.enabled: true"
    )


def describe(
    plugin_id: str,
    cfg: HostConfig,
    slot: Slot | None,
    pfile: PluginFile | None,
    *,
    loading: bool,
    error: str | None,
) -> PluginInfo:
    """The listing entry of one plugin from what the host knows of it."""
    entry = cfg.plugin_entry(plugin_id)
    if error is None and slot is None and not loading:
        error = plugins_off_reason(cfg)
    if slot is not None:
        pfile = slot.file
    reg = slot.registration if slot else None
    health = slot.backend.health() if slot else None
    return PluginInfo(
        id=plugin_id,
        path=str(pfile.path) if pfile else None,
        # The file name's version wins (it is what discovery chose by); an unversioned
        # file shows the Version its plugin registered, so a listing never says null
        # for a plugin that told us its version.
        version=(pfile.version if pfile else None) or (reg.metadata.version if reg else None),
        configured=plugin_id in cfg.plugins.configs,
        enabled=entry.enabled,
        registered=slot is not None,
        loading=loading,
        priority=entry.priority,
        metadata=reg.metadata.to_json() if reg else None,
        capabilities=dict(reg.capabilities) if reg else {},
        error=error,
        isolation="program"
        if entry.command or entry.token or entry.token_file
        else entry.isolation,
        state=health.state.value if health else None,
        restarts=health.restarts if health else 0,
        last_error=health.last_error if health else None,
        last_signal=health.last_signal if health else None,
        warnings=[*reg.warnings, *_credentials(plugin_id, cfg)] if reg else [],
        sha256=slot.verdict.sha256 if slot and slot.verdict else None,
        signed_by=slot.verdict.signer if slot and slot.verdict else None,
    )


def credentials_warning(plugin_id: str, cfg: HostConfig) -> str | None:
    """The warning for a plugin whose permissions let it read credentials (host.auth.*).

    Only where permissions are in use (`strict`, or the plugin has a `permissions` entry):
    under the Go host's defaults every plugin may, and a warning on each would be noise.
    """
    entry = cfg.plugin_entry(plugin_id).permissions
    strict = cfg.plugins.default_permissions == "strict"
    if entry is None and not strict:
        return None
    grant = compile_grant(plugin_id, entry, strict=strict)
    if not grant.reads_credentials:
        return None
    granted = ", ".join(sorted(grant.callbacks & CREDENTIAL_CALLBACKS))
    return (
        f"plugin {plugin_id} may read credentials of the auth dir ({granted}); if it need"
        f" not, set {key_of(plugin_id, 'callbacks')} without host.auth.*"
    )


def _credentials(plugin_id: str, cfg: HostConfig) -> list[str]:
    warning = credentials_warning(plugin_id, cfg)
    return [warning] if warning else []


def unavailable(
    plugin_id: str,
    method: str,
    cfg: HostConfig,
    *,
    has_file: bool,
    loading: bool,
    reason: str | None,
) -> PluginError:
    """The error for a call to a plugin that is not loaded, saying what to do about it."""
    plugins_dir: Path = cfg.plugins_dir()
    if not has_file and plugin_id not in cfg.plugins.configs:
        return PluginNotFound(
            f"no plugin file with ID {plugin_id!r} under {plugins_dir}",
            plugin_id=plugin_id,
            method=method,
        )
    if loading:
        message = "still loading; retry in a moment"
    elif reason:
        message = f"not loaded: {reason}"
    elif not has_file:
        message = (
            f"configured, but there is no plugin file {plugin_id}{LIBRARY_SUFFIX} "
            f"under {plugins_dir}"
        )
    elif not cfg.plugins.enabled:
        message = "not loaded: plugins are off; set plugins.enabled: true"
    elif not cfg.plugin_entry(plugin_id).enabled:
        message = f"not loaded: set plugins.configs.{plugin_id}.enabled: true"
    else:
        message = "not loaded"
    return PluginNotLoaded(message, plugin_id=plugin_id, method=method)
