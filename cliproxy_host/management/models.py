"""Request and response bodies of the management API, with the Go host's field names."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class ConfigFieldOut(BaseModel):
    name: str
    type: str
    enum_values: list[str]
    description: str


class MetadataOut(BaseModel):
    name: str
    version: str
    author: str
    github_repository: str
    logo: str
    config_fields: list[ConfigFieldOut]


class MenuOut(BaseModel):
    """A menu entry a plugin asked for: a route or resource path with its label."""

    path: str
    menu: str
    description: str


class ResourceLinkOut(BaseModel):
    """A resource the plugin serves, with a link a browser can open without a header."""

    path: str = Field(description="the resource's full path")
    url: str | None = Field(
        description="path and query to open (same origin): signed and short-lived, or the "
        "plain path when remote-management.open-plugin-resources is true; null in "
        "`plugins --json`, which no server signs"
    )
    expires_at: int | None = Field(description="Unix seconds when url stops working; null: never")


class PluginEntry(BaseModel):
    """One plugin in the list, as the Go host reports it (plus a few host extras)."""

    id: str
    path: str
    configured: bool
    registered: bool
    enabled: bool
    effective_enabled: bool = Field(
        description="plugins_enabled and enabled and registered: whether it serves now"
    )
    supports_oauth: bool
    oauth_provider: str
    logo: str
    config_fields: list[ConfigFieldOut]
    menus: list[MenuOut]
    resource_links: list[ResourceLinkOut] = Field(
        description="this host's: a link for each resource the plugin declared"
    )
    metadata: MetadataOut | None
    priority: int
    version: str | None = Field(
        description="the version in the file name, else the registered metadata Version"
    )
    loading: bool = Field(description="loading or registering right now (busy)")
    error: str | None = Field(description="why it is not registered, if it is not")
    isolation: str = Field(description="inprocess, process or program (a command)")
    state: str | None = Field(description="running, restarting, unhealthy or fused, if loaded")
    restarts: int = Field(description="how often its worker was restarted")
    last_error: str | None = Field(description="the last runtime failure")
    last_signal: str | None = Field(description="the signal that last killed its worker")
    warnings: list[str] = Field(
        default_factory=list,
        description="what registered but cannot work, e.g. an executor without formats",
    )
    sha256: str | None = Field(
        default=None,
        description="the sha256 of the loaded bytes, when a pin or trusted keys apply",
    )
    signed_by: str | None = Field(
        default=None, description="the key of plugins.trusted-keys that signed the loaded file"
    )


class ConfigStoreOut(BaseModel):
    kind: str  # "postgresql"
    location: str  # the DSN without its password
    connected: bool  # false: the last good config stays in force while it reconnects
    error: str | None = None
    since: float | None = None  # when `connected` last changed (seconds since the epoch)


class PluginList(BaseModel):
    plugins_enabled: bool
    plugins_dir: str
    # Why the plugins dir cannot be used (missing, a file); the config before stays in force.
    plugins_dir_error: str | None = None
    # A shared config store (serve --config-store): reachable or not; null with the file.
    config_store: ConfigStoreOut | None = None
    plugins: list[PluginEntry]


class EnabledBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool


class DeleteResult(BaseModel):
    id: str
    deleted_files: list[str]
    config_removed: bool


PluginConfigBody = dict[str, Any]


class AuditEntryOut(BaseModel):
    """One management write, as the audit log recorded it."""

    seq: int = Field(description="the entry's number; numbering goes on across rotations")
    time: str = Field(description="when, ISO 8601 in UTC")
    action: str = Field(description="e.g. config.patch, plugin.enable, plugin.delete")
    route: str = Field(description="method and path of the request")
    plugin: str | None
    client: str | None = Field(description="the client's address")
    key: str | None = Field(description="the first 16 hex digits of the key's SHA-256")
    config_before: str | None = Field(description="SHA-256 of the config file before")
    config_after: str | None = Field(description="SHA-256 of the config file after")
    outcome: str = Field(description='"ok", or the error code the write failed with')
    detail: str | None = None


class AuditPageOut(BaseModel):
    entries: list[AuditEntryOut] = Field(description="newest first")
    next: int | None = Field(description="pass as `before` for the next page; null: no more")
