"""The pipeline's stages over plugins: chains, first-answer stages and broadcasts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..envelope import b64decode, b64encode, ci_get
from ..errors import DECLINE_CODES, NativeHandlerFailed, PluginError
from .models import Headers, headers_of
from .source import Participant, PluginSource

log = logging.getLogger(__name__)

# Builds the request one participant gets (the schema-version rules differ per plugin).
RequestFor = Callable[[Participant], Mapping[str, Any]]
# Turns a body into its base64 field (the run's memo, so an unchanged body is encoded once).
Encode = Callable[[bytes], str]


class Stages:
    """Calls participants of a stage; a stage that fails is recorded and skipped (as upstream)."""

    __slots__ = ("_call", "problems", "source")

    def __init__(self, source: PluginSource) -> None:
        self.source = source
        self._call = source.call
        self.problems: list[PluginError] = []

    def call(self, p: Participant, method: str, request: Mapping[str, Any]) -> Any:
        """One participant's answer; raises its PluginError (plugin ID and method set)."""
        if p.native is None:
            return self._call(p.name, method, request)
        try:
            return p.native(request)
        except PluginError:
            raise
        except Exception as exc:
            raise NativeHandlerFailed(f"{p.name}: {exc}", method=method) from exc

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
            if p.native is None:
                return self._call(p.name, method, request)
            return self.call(p, method, request)
        except PluginError as exc:
            self._skip(exc, p, method)
            return None

    def body_chain(
        self,
        method: str,
        participants: Sequence[Participant],
        body: bytes,
        request: Mapping[str, Any],
        encode: Encode = b64encode,
    ) -> bytes:
        """A chained stage over a body: each non-empty answer Body is the next one's input."""
        for p in participants:
            out = self.attempt(p, method, {**request, "Body": encode(body)})
            new = _body(out, "Body")
            if new:
                body = new
        return body

    def body_first(
        self,
        method: str,
        participants: Sequence[Participant],
        body: bytes,
        request: Mapping[str, Any],
        encode: Encode = b64encode,
    ) -> bytes | None:
        """The first participant's non-empty answer Body, or None when nobody handled it."""
        for p in participants:
            new = _body(self.attempt(p, method, {**request, "Body": encode(body)}), "Body")
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


def merge_headers(current: Headers, answer: Mapping[str, Any]) -> Headers:
    """Apply an interceptor's ClearHeaders then Headers (replacing names case-insensitively).

    `current` itself when the answer changes nothing; else a new mapping (never in place).
    """
    clear = ci_get(answer, "clearheaders", None) or ()
    updates = headers_of(ci_get(answer, "headers", None))
    if not clear and not updates:
        return current
    drop = {str(n).lower() for n in clear} | {n.lower() for n in updates}
    out = {n: v for n, v in current.items() if n.lower() not in drop}
    out.update(updates)
    return out
