"""The PluginSource the model pipeline runs on: PluginHost's handlers, calls and streams."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..pipeline import Participant, PluginStream
from .dispatch import NOT_HANDLED, NativeHandlers
from .registry import NativeHandler, Record, Snapshot

Call = Callable[[str, str, Any], Any]
CallStream = Callable[..., PluginStream]


def _native(handler: NativeHandler) -> Callable[[Any], Any]:
    def run(request: Any) -> Any:
        result = handler.handler(request)
        return None if result is NOT_HANDLED else result

    return run


class HostSource:
    """Answers the pipeline from one snapshot at a time; participants cached per snapshot."""

    # The host's own callables, not wrappers: the pipeline calls them on every request.
    call: Call
    revision: Callable[[], object]

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        natives: NativeHandlers,
        call: Call,
        call_stream: CallStream,
    ) -> None:
        self._snapshot = snapshot
        # The snapshot is the revision: a new one is published whenever plugins change.
        self.revision = snapshot
        self._natives = natives
        self.call = call
        self._call_stream = call_stream
        self._cache: tuple[Snapshot, dict[str, tuple[Participant, ...]]] | None = None

    def participants(self, method: str) -> tuple[Participant, ...]:
        snap = self._snapshot()
        cache = self._cache
        if cache is None or cache[0] is not snap:
            cache = self._cache = (snap, {})
        found = cache[1].get(method)
        if found is None:
            found = cache[1][method] = tuple(
                self._participant(h) for h in self._natives.order(method, snap.providers(method))
            )
        return found

    @staticmethod
    def _participant(handler: NativeHandler | Record) -> Participant:
        if isinstance(handler, NativeHandler):
            return Participant(handler.name, native=_native(handler))
        reg = handler.registration
        return Participant(
            handler.plugin_id, handler.priority, reg.schema_version, reg.capabilities
        )

    def call_stream(
        self,
        plugin_id: str,
        method: str,
        request: Mapping[str, Any],
        *,
        callback_id: str | None = None,
    ) -> PluginStream:
        return self._call_stream(plugin_id, method, request, callback_id=callback_id)
