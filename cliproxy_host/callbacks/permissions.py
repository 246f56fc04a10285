"""Permissions: which host callbacks, topics, plugins and hosts each plugin may reach."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..config.schema import HostConfig, PluginPermissions
from ..errors import PermissionDenied
from .http import host_matches, read_request

log = logging.getLogger(__name__)

# The callbacks of the Go host's ABI: allowed by default, so its plugins work unchanged.
GO_CALLBACKS: Final = frozenset(
    {
        "host.log",
        "host.http.do",
        "host.http.do_stream",
        "host.http.stream_read",
        "host.http.stream_close",
        "host.stream.emit",
        "host.stream.close",
        "host.auth.list",
        "host.auth.get",
        "host.auth.get_runtime",
        "host.auth.save",
        "host.model.execute",
        "host.model.execute_stream",
        "host.model.stream_read",
        "host.model.stream_close",
    }
)
# This project's own callbacks: denied until a plugin's permissions grant them.
OWN_CALLBACKS: Final = frozenset(
    {
        "host.event.publish",
        "host.event.subscribe",
        "host.event.unsubscribe",
        "host.plugin.call",
        "host.dispatch",
        "host.service.lookup",
    }
)
# The callbacks through which a plugin reads credentials (the list and the log warn).
CREDENTIAL_CALLBACKS: Final = frozenset(
    {"host.auth.list", "host.auth.get", "host.auth.get_runtime"}
)
# The callbacks a topic or plugin list grants along with itself, and the key that grants them.
_GRANTED_BY: Final = {
    "host.event.publish": "publish",
    "host.event.subscribe": "subscribe",
    "host.event.unsubscribe": "subscribe",
    "host.plugin.call": "call",
    "host.dispatch": "call",
}
_HTTP_REQUESTS: Final = frozenset({"host.http.do", "host.http.do_stream"})


@dataclass(frozen=True, slots=True)
class Grant:
    """One plugin's permissions, compiled once per config: sets for the lookups per call."""

    plugin_id: str
    callbacks: frozenset[str]
    allowed_hosts: tuple[str, ...] | None
    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None
    call: frozenset[str] | None

    @property
    def reads_credentials(self) -> bool:
        return not self.callbacks.isdisjoint(CREDENTIAL_CALLBACKS)


def compile_grant(plugin_id: str, entry: PluginPermissions | None, *, strict: bool) -> Grant:
    """The grant of one plugin from its `permissions` entry and the default mode."""
    known = GO_CALLBACKS | OWN_CALLBACKS
    if entry is None:
        entry = PluginPermissions()
    if entry.callbacks is not None:
        callbacks = {c for c in known if any(fnmatch.fnmatchcase(c, g) for g in entry.callbacks)}
    else:
        callbacks = set() if strict else set(GO_CALLBACKS)
    for method, key in _GRANTED_BY.items():
        if getattr(entry, key) is not None:
            callbacks.add(method)
    return Grant(
        plugin_id=plugin_id,
        callbacks=frozenset(callbacks),
        allowed_hosts=_lowered(entry.allowed_hosts),
        publish=_tuple(entry.publish),
        subscribe=_tuple(entry.subscribe),
        call=frozenset(entry.call) if entry.call is not None else None,
    )


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values is not None else None


def _lowered(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(v.lower() for v in values) if values is not None else None


def key_of(plugin_id: str, name: str) -> str:
    """The config key that grants `name` (a permissions key) to a plugin."""
    return f"plugins.configs.{plugin_id}.permissions.{name}"


class Permissions:
    """The grants of every plugin under the current config, compiled on first use. Thread-safe.

    `configure` swaps in an empty cache (dict assignment is atomic), so a call never sees
    a grant of two configs mixed.
    """

    def __init__(self, config: HostConfig | None = None) -> None:
        self._config = config if config is not None else HostConfig()
        self._grants: dict[str, Grant] = {}

    def configure(self, config: HostConfig) -> None:
        self._config = config
        self._grants = {}

    def grant(self, plugin_id: str) -> Grant:
        grant = self._grants.get(plugin_id)
        if grant is None:
            cfg = self._config
            grant = compile_grant(
                plugin_id,
                cfg.plugin_entry(plugin_id).permissions,
                strict=cfg.plugins.default_permissions == "strict",
            )
            self._grants[plugin_id] = grant
        return grant

    def check(self, plugin_id: str, method: str, request: Mapping[str, Any]) -> None:
        """Raise PermissionDenied unless the plugin may call `method` with `request`.

        The one permission check of the host-callback path: a set lookup for an allowed
        callback; only a plugin with its own `allowed-hosts` pays for matching a URL.
        """
        grant = self._grants.get(plugin_id) or self.grant(plugin_id)
        if method not in grant.callbacks:
            raise self._denied_callback(plugin_id, method)
        if grant.allowed_hosts is not None and method in _HTTP_REQUESTS:
            self._check_host(grant, method, request)

    def check_topic(self, plugin_id: str, key: str, topic: str) -> None:
        """`key` is "publish" or "subscribe"; a topic (or pattern) outside its globs is denied."""
        globs: tuple[str, ...] | None = getattr(self.grant(plugin_id), key)
        if globs is None or any(fnmatch.fnmatchcase(topic, g) for g in globs):
            return
        raise PermissionDenied(
            f"plugin {plugin_id} may not {key} {topic!r}: add it (or a glob) to"
            f" {key_of(plugin_id, key)} (now {list(globs)})",
            plugin_id=plugin_id,
            method=f"host.event.{key}",
        )

    def may_call(self, plugin_id: str, target: str) -> bool:
        allowed = self.grant(plugin_id).call
        return allowed is None or target in allowed

    def check_call(self, plugin_id: str, target: str, method: str) -> None:
        if not self.may_call(plugin_id, target):
            raise PermissionDenied(
                f"plugin {plugin_id} may not call plugin {target}: add {target} to"
                f" {key_of(plugin_id, 'call')}",
                plugin_id=plugin_id,
                method=method,
            )

    def reads_credentials(self, plugin_id: str) -> bool:
        return self.grant(plugin_id).reads_credentials

    def _denied_callback(self, plugin_id: str, method: str) -> PermissionDenied:
        key = _GRANTED_BY.get(method, "callbacks")
        how = (
            f"add {method} (or a glob) to {key_of(plugin_id, key)}"
            if key == "callbacks"
            else f"set {key_of(plugin_id, key)} (the {key} list it grants)"
        )
        return PermissionDenied(
            f"plugin {plugin_id} is not granted {method}; {how}",
            plugin_id=plugin_id,
            method=method,
        )

    def _check_host(self, grant: Grant, method: str, request: Mapping[str, Any]) -> None:
        outgoing, _problems = read_request(request)
        # A request without a usable URL is left to host.http's own validation.
        host = outgoing.url.host if outgoing is not None else None
        if host is None or any(host_matches(host, p) for p in grant.allowed_hosts or ()):
            return
        raise PermissionDenied(
            f"plugin {grant.plugin_id} may not reach host {host}: add it to"
            f" {key_of(grant.plugin_id, 'allowed-hosts')}",
            plugin_id=grant.plugin_id,
            method=method,
        )


def needed_permissions(used: Iterable[str]) -> dict[str, list[str]]:
    """The `permissions` entry a plugin needs for the callbacks it used (check's summary)."""
    used = set(used)
    entry: dict[str, list[str]] = {"callbacks": sorted(used & (GO_CALLBACKS | OWN_CALLBACKS))}
    for method, key in _GRANTED_BY.items():
        if method in used:
            entry.setdefault(key, ["*"])
    return entry
