"""What the pipeline needs of a host: handlers in dispatch order, one call, one stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol


class StreamChunk(Protocol):
    """One chunk of an executor stream: its bytes, or a terminal error text."""

    @property
    def payload(self) -> bytes: ...

    @property
    def error(self) -> str: ...


class PluginStream(Protocol):
    """An open executor stream; closing it tells the plugin the consumer is gone."""

    @property
    def headers(self) -> Mapping[str, Any]: ...

    def __iter__(self) -> Iterator[StreamChunk]: ...

    def __aiter__(self) -> AsyncIterator[StreamChunk]: ...

    def close(self) -> None: ...

    def __enter__(self) -> PluginStream: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True)
class Participant:
    """One handler of a method: a host (native) handler or a loaded plugin.

    `native` is set for the application's Python handlers, which run before plugins; for
    a plugin, the pipeline calls it through the source by `name` (its plugin ID).
    """

    name: str
    priority: int = 0
    schema_version: int = 1
    capabilities: Mapping[str, Any] = field(default_factory=dict, compare=False)
    native: Callable[[Any], Any] | None = field(default=None, compare=False)


class PluginSource(Protocol):
    """The host as the pipeline sees it (host/facade.py builds one over PluginHost)."""

    def revision(self) -> object:
        """Changes whenever the loaded plugins change; cached views are keyed by it."""
        ...

    def participants(self, method: str) -> Sequence[Participant]:
        """Every handler of `method` in dispatch order: host handlers, then plugins."""
        ...

    def call(self, plugin_id: str, method: str, request: Mapping[str, Any]) -> Any:
        """One plugin's decoded result, or its PluginError."""
        ...

    def call_stream(
        self,
        plugin_id: str,
        method: str,
        request: Mapping[str, Any],
        *,
        callback_id: str | None = None,
    ) -> PluginStream:
        """One plugin's stream (executor.execute_stream)."""
        ...
