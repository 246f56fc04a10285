"""The pipeline's stages over plugins: chains, first-answer stages and broadcasts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..envelope import b64decode, b64encode, ci_get
from ..errors import DECLINE_CODES, NativeHandlerFailed, PluginError
from .models import headers_of
from .source import Participant, PluginSource

log = logging.getLogger(__name__)

# Builds the request one participant gets (the schema-version rules differ per plugin).
RequestFor = Callable[[Participant], Mapping[str, Any]]


class Stages:
    """Calls participants of a stage; a stage that fails is recorded and skipped (as upstream)."""

    __slots__ = ("problems", "source")

    def __init__(self, source: PluginSource) -> None:
        self.source = source
        self.problems: list[PluginError] = []

    def call(self, p: Participant, method: str, request: Mapping[str, Any]) -> Any:
        """One participant's answer; raises its PluginError (plugin ID and method set)."""
        if p.native is not None:
            try:
                return p.native(request)
            except PluginError:
                raise
            except Exception as exc:
                raise NativeHandlerFailed(f"{p.name}: {exc}", method=method) from exc
        return self.source.call(p.name, method, request)

    def _skip(self, exc: PluginError, p: Participant, method: str) -> None:
        if exc.code in DECLINE_CODES:
            return
        if exc.plugin_id is None and p.native is None:
            exc.plugin_id = p.name
        if exc.method is None:
            exc.method = method
        log.warning("%s (stage skipped)", exc)
        self.problems.append(exc)

    def attempt(self, p: Participant, method: str, request: Mapping[str, Any]) -> Any:
        """One participant's answer, or None when it declined or failed (recorded)."""
        try:
            return self.call(p, method, request)
        except PluginError as exc:
            self._skip(exc, p, method)
            return None

    def body_chain(
        self, method: str, body: bytes, request: Mapping[str, Any], *, key: str = "Body"
    ) -> bytes:
        """A chained stage over a body: each non-empty answer Body is the next one's input."""
        for p in self.source.participants(method):
            out = self.attempt(p, method, {**request, key: b64encode(body)})
            new = _body(out, key)
            if new:
                body = new
        return body

    def body_first(self, method: str, body: bytes, request: Mapping[str, Any]) -> bytes | None:
        """The first participant's non-empty answer Body, or None when nobody handled it."""
        for p in self.source.participants(method):
            new = _body(self.attempt(p, method, {**request, "Body": b64encode(body)}), "Body")
            if new:
                return new
        return None

    def broadcast(
        self, method: str, observers: Sequence[Participant], request: Mapping[str, Any]
    ) -> None:
        """Every observer sees the event; failures are logged and recorded."""
        for p in observers:
            self.attempt(p, method, request)


def _body(out: Any, key: str) -> bytes:
    if not isinstance(out, Mapping):
        return b""
    raw = ci_get(out, key, "")
    if isinstance(raw, bytes):
        return raw
    if not raw:
        return b""
    return b64decode(raw, key)


def merge_headers(
    current: dict[str, tuple[str, ...]], answer: Mapping[str, Any]
) -> dict[str, tuple[str, ...]]:
    """Apply an interceptor's ClearHeaders then Headers (replacing names case-insensitively)."""
    clear = ci_get(answer, "clearheaders", None) or ()
    updates = headers_of(ci_get(answer, "headers", None))
    if not clear and not updates:
        return current
    drop = {str(n).lower() for n in clear} | {n.lower() for n in updates}
    out = {n: v for n, v in current.items() if n.lower() not in drop}
    out.update(updates)
    return out
