"""What the host needs of a loaded plugin wherever it lives: the backend protocol, its health."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class State(enum.StrEnum):
    """How a loaded plugin is doing, as listings show it."""

    RUNNING = "running"
    RESTARTING = "restarting"  # its worker died or was killed; a new one is starting
    UNHEALTHY = "unhealthy"  # a call is stuck in it (in-process) or it misses pings
    FUSED = "fused"  # crashed too often: off until its config or file changes


@dataclass(frozen=True)
class Health:
    """A backend's health report; `PluginBackend.health()` answers one."""

    state: State = State.RUNNING
    restarts: int = 0
    last_error: str | None = None
    last_signal: str | None = None  # e.g. "SIGSEGV", for a worker that died of a signal


class PluginBackend(Protocol):
    """A loaded plugin wherever it lives (in this process or a worker): what the host needs."""

    plugin_id: str
    path: Path

    def call(self, method: str, request: bytes) -> bytes:
        """Send one request envelope; answer the response envelope bytes or raise PluginError."""
        ...

    def close(self) -> None:
        """Stop routing calls, wait for those in flight, shut the plugin down and unload it."""
        ...

    def health(self) -> Health:
        """The backend's current state, restarts and last failure."""
        ...
