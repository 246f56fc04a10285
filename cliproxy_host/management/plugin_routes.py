"""What plugins add to the management API: routes, resources, menus, their OAuth provider."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..envelope import b64decode, b64encode, ci_get
from ..errors import PluginError, PluginResponseError
from ..host.facade import PluginHost, PluginInfo

log = logging.getLogger(__name__)

BASE_PATH: Final = "/v0/management"
RESOURCE_BASE: Final = "/v0/resource/plugins"
METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# What one plugin may register; the rest is refused with a warning naming the plugin. Each
# route and resource is a table entry every request may be matched against, each menu a
# line of every list answer.
MAX_ROUTES: Final = 256
MAX_RESOURCES: Final = 256
MAX_MENUS: Final = 256
# Never forwarded to a plugin: they carry the operator's management key.
PRIVATE_HEADERS: Final = frozenset({"authorization", "x-management-key", "cookie"})


@dataclass(frozen=True)
class Menu:
    path: str
    menu: str
    description: str


@dataclass(frozen=True)
class Tables:
    """One consistent set of plugin routes; replaced whole on every rebuild."""

    routes: dict[tuple[str, str], str] = field(default_factory=dict)  # (METHOD, path) -> ID
    resources: set[tuple[str, str]] = field(default_factory=set)  # (ID, subpath)
    menus: dict[str, list[Menu]] = field(default_factory=dict)
    oauth_providers: dict[str, str] = field(default_factory=dict)  # ID -> auth.identifier


def _clean_path(raw: Any) -> str | None:
    """A plugin-supplied path, or None when it must be rejected."""
    if not isinstance(raw, str) or not raw.startswith("/"):
        return None
    if ":" in raw or "*" in raw or "{" in raw or "?" in raw or "#" in raw:
        return None
    parts = raw.split("/")
    if any(p in (".", "..") for p in parts) or "//" in raw:
        return None
    return raw.rstrip("/") or "/"


class PluginRoutes:
    """Asks each management_api plugin for its routes and resolves requests to their owner."""

    def __init__(self, host: PluginHost, is_host_route: Callable[[str, str], bool]) -> None:
        self._host = host
        self._is_host_route = is_host_route
        self._tables = Tables()
        self._lock = threading.Lock()

    @property
    def tables(self) -> Tables:
        return self._tables

    def rebuild(self) -> None:
        """Re-ask every registered management plugin, highest priority first."""
        with self._lock:
            tables = Tables()
            for info in self._host.plugins():  # dispatch order: the higher priority wins a path
                if not info.registered:
                    continue
                if info.capabilities.get("management_api") is True:
                    self._register(info, tables)
                if info.capabilities.get("auth_provider") is True:
                    self._ask_oauth_provider(info.id, tables)
            self._tables = tables

    def _ask_oauth_provider(self, plugin_id: str, tables: Tables) -> None:
        try:
            answer = self._host.call(plugin_id, "auth.identifier", {})
        except PluginError as exc:
            log.warning("%s; its OAuth provider is not listed", exc)
            return
        identifier = ci_get(answer, "identifier") if isinstance(answer, Mapping) else None
        if isinstance(identifier, str):
            tables.oauth_providers[plugin_id] = identifier

    def _register(self, info: PluginInfo, tables: Tables) -> None:
        pid = info.id
        request = {
            "Plugin": info.metadata,
            "BasePath": BASE_PATH,
            "ResourceBasePath": f"{RESOURCE_BASE}/{pid}",
        }
        try:
            answer = self._host.call(pid, "management.register", request)
        except PluginError as exc:
            log.warning("%s; its management routes are not served", exc)
            return
        if not isinstance(answer, Mapping):
            log.warning("plugin %s: management.register answered no object; ignored", pid)
            return
        menus: list[Menu] = []
        served = 0
        routes = _listed(pid, answer, "Routes")
        for route in routes:
            if not isinstance(route, Mapping):
                continue
            if served == MAX_ROUTES:
                _refuse_excess(pid, "routes", len(routes), MAX_ROUTES)
                break
            method = str(ci_get(route, "Method") or "GET").upper()
            path = _clean_path(ci_get(route, "Path"))
            if path is None or method not in METHODS:
                log.warning(
                    "plugin %s: route %s %r rejected: paths start with '/' and contain no "
                    "':', '*', '{' or '..'",
                    pid,
                    method,
                    ci_get(route, "Path"),
                )
                continue
            full = path if path.startswith(BASE_PATH + "/") else BASE_PATH + path
            key = (method, full)
            if self._is_host_route(method, full):
                log.warning("plugin %s: route %s %s collides with a host route; skipped", pid, *key)
                continue
            if key in tables.routes:
                log.warning(
                    "plugin %s: route %s %s is already served by plugin %s; skipped",
                    pid,
                    method,
                    full,
                    tables.routes[key],
                )
                continue
            tables.routes[key] = pid
            served += 1
            _add_menu(menus, full, route)
        served = 0
        resources = _listed(pid, answer, "Resources")
        for resource in resources:
            if not isinstance(resource, Mapping):
                continue
            if served == MAX_RESOURCES:
                _refuse_excess(pid, "resources", len(resources), MAX_RESOURCES)
                break
            path = _clean_path(ci_get(resource, "Path"))
            if path is None:
                log.warning("plugin %s: resource %r rejected", pid, ci_get(resource, "Path"))
                continue
            tables.resources.add((pid, path))
            served += 1
            _add_menu(menus, f"{RESOURCE_BASE}/{pid}{path}", resource)
        if len(menus) > MAX_MENUS:
            _refuse_excess(pid, "menus", len(menus), MAX_MENUS)
            del menus[MAX_MENUS:]
        tables.menus[pid] = menus

    def route_owner(self, method: str, path: str) -> str | None:
        return self._tables.routes.get((method.upper(), path.rstrip("/") or "/"))

    def allowed_methods(self, path: str) -> list[str]:
        """The methods a host route or a plugin route answers at path, sorted; [] if none."""
        key = path.rstrip("/") or "/"
        routes = self._tables.routes
        return sorted(m for m in METHODS if (m, key) in routes or self._is_host_route(m, path))

    def resources(self, plugin_id: str) -> list[str]:
        """The full paths of the resources plugin_id serves, sorted."""
        return sorted(
            f"{RESOURCE_BASE}/{pid}{sub}" for pid, sub in self._tables.resources if pid == plugin_id
        )

    def has_resource(self, plugin_id: str, subpath: str) -> bool:
        return (plugin_id, subpath.rstrip("/") or "/") in self._tables.resources

    def oauth_provider(self, plugin_id: str) -> str:
        return self._tables.oauth_providers.get(plugin_id, "")

    def menus(self, plugin_id: str) -> list[Menu]:
        return self._tables.menus.get(plugin_id, [])

    def handle(
        self,
        plugin_id: str,
        *,
        method: str,
        path: str,
        headers: Mapping[str, list[str]],
        query: Mapping[str, list[str]],
        body: bytes,
    ) -> tuple[int, dict[str, list[str]], bytes]:
        """Forward one HTTP request to its plugin as management.handle; answer its response."""
        request = {
            "Method": method,
            "Path": path,
            "Headers": {k: v for k, v in headers.items() if k.lower() not in PRIVATE_HEADERS},
            "Query": dict(query),
            "Body": b64encode(body),
        }
        answer = self._host.call(plugin_id, "management.handle", request)
        if not isinstance(answer, Mapping):
            answer = {}
        status = ci_get(answer, "StatusCode")
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            status = 200
        out_headers: dict[str, list[str]] = {}
        raw_headers = ci_get(answer, "Headers")
        if isinstance(raw_headers, Mapping):
            for name, values in raw_headers.items():
                listed = [values] if isinstance(values, str) else values
                if isinstance(listed, list):
                    out_headers[str(name)] = [str(v) for v in listed]
        try:
            data = b64decode(ci_get(answer, "Body"), "Body")
        except ValueError as exc:
            raise PluginResponseError(
                str(exc), plugin_id=plugin_id, method="management.handle"
            ) from None
        return status, out_headers, data


def _refuse_excess(pid: str, what: str, given: int, cap: int) -> None:
    log.warning(
        "plugin %s: management.register answered %d %s; only the first %d are served "
        "(the most one plugin may register): register fewer",
        pid,
        given,
        what,
        cap,
    )


def _listed(pid: str, answer: Mapping[str, Any], key: str) -> list[Any]:
    value = ci_get(answer, key)
    if value is None or isinstance(value, list):
        return value or []
    log.warning("plugin %s: management.register's %s is not a list; ignored", pid, key)
    return []


def _add_menu(menus: list[Menu], path: str, spec: Mapping[str, Any]) -> None:
    label = ci_get(spec, "Menu")
    if isinstance(label, str) and label:
        description = ci_get(spec, "Description")
        menus.append(Menu(path, label, description if isinstance(description, str) else ""))
