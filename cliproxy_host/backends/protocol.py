"""What the host needs of a loaded plugin wherever it lives: the backend protocol, its health."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from ..abi import Method

# How long close() waits for calls in flight before it leaves them to finish on their own.
DEFAULT_DRAIN_TIMEOUT: Final = 5.0
# The calls that hand a plugin its config: answered ok, the config is the plugin's.
CONFIG_METHODS: Final = frozenset({Method.REGISTER.value, Method.RECONFIGURE.value})


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
    """A loaded plugin wherever it lives (in this process or a worker).

    Backends carry bytes and keep their plugin alive; everything else (the breaker, the
    concurrency cap, timeouts, the response cap, decoding envelopes) is the guard's
    (`guard.GuardedBackend`), which the host puts around every backend.
    """

    plugin_id: str
    path: Path

    @property
    def ends_overruns(self) -> bool:
        """Whether `call` ends a call that outlasts its `timeout` itself (by killing the
        process that runs it). If not, the guard runs timed calls on a thread of its own
        and gives up waiting, since a call in this process cannot be stopped."""
        ...

    def call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        """Send one request envelope; answer the response envelope bytes or raise PluginError.

        `timeout` (seconds, None for none) bounds the call in a backend that `ends_overruns`;
        past it the call raises PluginTimeout. Other backends ignore it.
        """
        ...

    def configured(self, request: bytes, timeout: float | None) -> None:
        """The plugin answered this plugin.register/plugin.reconfigure request ok.

        A backend that restarts its plugin hands the new one this config, bounded by
        `timeout` like the call that brought it.
        """
        ...

    def close(self, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Stop routing calls, wait (bounded) for those in flight, shut the plugin down."""
        ...

    def health(self) -> Health:
        """The backend's current state, restarts and last failure."""
        ...


class GuardedPlugin(Protocol):
    """A loaded plugin as the host calls it: a backend behind its guard (`GuardedBackend`)."""

    plugin_id: str

    def call(self, method: str, request: bytes) -> Any:
        """The result of the plugin's answer envelope, or the PluginError it carries."""
        ...

    def close(self) -> None:
        """Close the backend (see PluginBackend.close)."""
        ...

    def health(self) -> Health:
        """The backend's health, with the guard's view (open circuit, stuck calls) added."""
        ...
