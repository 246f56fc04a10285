"""What the console's store, metrics and audit pages show, from the store's list, the host's
Metrics and the audit log: plain rows for the templates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from ..observe.metrics import PluginNumbers

__all__ = [
    "METRICS_POLLS",
    "METRICS_POLL_SECONDS",
    "MetricsRow",
    "StoreRow",
    "metrics_rows",
    "store_rows",
]

# The metrics table refreshes itself this often, and stops after this many refreshes (an
# hour): a tab left open does not poll for ever; a reload starts again.
METRICS_POLL_SECONDS: Final = 5
METRICS_POLLS: Final = 720


@dataclass(frozen=True)
class StoreRow:
    """One plugin one source offers."""

    key: str  # an HTML id made from the store id
    store_id: str
    source_id: str
    source_name: str
    plugin_id: str
    name: str
    description: str
    author: str
    version: str
    versions: list[str]
    installed: bool
    installed_version: str
    update_available: bool
    enabled: bool


def store_rows(body: dict[str, Any]) -> list[StoreRow]:
    """The list's entries (store_list with versions), in the order the sources list them."""
    rows = []
    for entry in body.get("plugins", []):
        store_id = str(entry["store_id"])
        rows.append(
            StoreRow(
                key=re.sub(r"[^A-Za-z0-9_-]", "-", store_id),
                store_id=store_id,
                source_id=str(entry["source_id"]),
                source_name=str(entry.get("source_name") or entry["source_id"]),
                plugin_id=str(entry["id"]),
                name=str(entry.get("name") or entry["id"]),
                description=str(entry.get("description") or ""),
                author=str(entry.get("author") or ""),
                version=str(entry["version"]),
                versions=[str(v) for v in entry.get("versions") or [entry["version"]]],
                installed=bool(entry.get("installed")),
                installed_version=str(entry.get("installed_version") or ""),
                update_available=bool(entry.get("update_available")),
                enabled=bool(entry.get("enabled")),
            )
        )
    return rows


@dataclass(frozen=True)
class MetricsRow:
    plugin_id: str
    calls: int
    errors: int
    latency: str  # the mean of the timed calls, in a unit that reads well
    in_flight: int
    state: str
    restarts: int | str
    breaker: str
    fused: str


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "no timed call yet"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def metrics_rows(numbers: list[PluginNumbers]) -> list[MetricsRow]:
    rows = []
    for n in numbers:
        status = n.status
        rows.append(
            MetricsRow(
                plugin_id=n.plugin_id,
                calls=n.calls,
                errors=n.errors,
                latency=_duration(n.mean_seconds),
                in_flight=n.in_flight,
                state=status.state if status else "not loaded",
                restarts=status.restarts if status else "-",
                breaker=status.breaker.replace("_", "-") if status else "-",
                fused="yes" if status and status.state == "fused" else "no",
            )
        )
    return rows
