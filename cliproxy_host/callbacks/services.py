"""The service registry: host.service.lookup over the `Services` plugins registered."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Provider:
    """One plugin offering a service: what host.service.lookup answers for it."""

    plugin_id: str
    name: str
    version: str
    priority: int

    def to_json(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin_id,
            "name": self.name,
            "version": self.version,
            "priority": self.priority,
        }


class ServiceDirectory:
    """Service name -> its providers in dispatch order (priority, highest first, then ID).

    Rebuilt whole by `update` when the host publishes a new snapshot; a lookup is one
    dict read of the current index.
    """

    def __init__(self) -> None:
        self._index: dict[str, tuple[Provider, ...]] = {}

    def update(self, providers: Iterable[Provider]) -> None:
        index: dict[str, list[Provider]] = {}
        for provider in sorted(providers, key=lambda p: (-p.priority, p.plugin_id)):
            index.setdefault(provider.name, []).append(provider)
        self._index = {name: tuple(found) for name, found in index.items()}

    def providers(self, name: str) -> tuple[Provider, ...]:
        return self._index.get(name, ())

    def lookup(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.service.lookup {"name", "version"?} -> {"providers": [...]} (maybe empty)."""
        name = request.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                'host.service.lookup: "name" (the service name, as plugins register it in'
                " Services) is required",
                retryable=False,
                http_status=400,
            )
        version = request.get("version")
        found = self.providers(name)
        if isinstance(version, str) and version:
            found = tuple(p for p in found if p.version == version)
        return {"providers": [p.to_json() for p in found]}
