"""Dispatch: one capability method run over native handlers and plugins, by its mode.

FIRST: the first handler that handles it answers (declines are skipped).
CHAIN: each handler's fields replace the request's for the next; the request is the answer.
BROADCAST: every handler sees it; each one's result or error is the answer.
The order of the handlers is decided once, in registry.dispatch_order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ..abi import METHOD_CAPABILITY, Mode, method_mode
from ..errors import DECLINE_CODES, NativeHandlerFailed, NoHandler, PluginError
from .registry import NativeHandler, Record, dispatch_order

log = logging.getLogger(__name__)

# Calls one loaded plugin: (record, method, request bytes) -> decoded result.
Invoke = Callable[[Record, str, bytes], Any]
Handler = NativeHandler | Record


class _NotHandled:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_HANDLED"


# A native handler returns this to let the next handler (or plugin) take the request.
NOT_HANDLED: Final = _NotHandled()


@dataclass(frozen=True)
class BroadcastResult:
    """What one observer made of a broadcast event: its result or its error."""

    name: str
    result: Any = None
    error: PluginError | None = None


class NativeHandlers:
    """The Python handlers an application registered, by method, in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_method: dict[str, tuple[NativeHandler, ...]] = {}

    def add(self, handler: NativeHandler) -> None:
        with self._lock:
            known = self._by_method.get(handler.method, ())
            self._by_method[handler.method] = (*known, handler)

    def order(self, method: str, providers: Iterable[Record]) -> list[Handler]:
        """Every handler of `method` in dispatch order: these first, then the plugins."""
        return dispatch_order(self._by_method.get(method, ()), providers)


def encode(request: Any) -> bytes:
    """A request as envelope bytes: bytes pass through, None is an empty object."""
    if isinstance(request, bytes):
        return request
    return orjson.dumps({} if request is None else request)


def run(
    method: str, handlers: Sequence[Handler], request: Mapping[str, Any], invoke: Invoke
) -> Any:
    """Run `method` over `handlers` (already in dispatch order) by the method's mode."""
    mode = method_mode(method)
    if mode is Mode.CHAIN:
        return _chain(method, handlers, dict(request), invoke)
    if mode is Mode.BROADCAST:
        return _broadcast(method, handlers, request, invoke)
    return _first(method, handlers, request, invoke)


def _first(
    method: str, handlers: Sequence[Handler], request: Mapping[str, Any], invoke: Invoke
) -> Any:
    data = encode(request)
    for h in handlers:
        if isinstance(h, NativeHandler):
            result = h.handler(request)
            if result is not NOT_HANDLED:
                return result
            continue
        try:
            return invoke(h, method, data)
        except PluginError as exc:
            if exc.code not in DECLINE_CODES:
                raise
    flag = METHOD_CAPABILITY.get(method)
    hint = f"; enable a plugin with the {flag} capability" if flag else ""
    raise NoHandler(f"nothing handles {method}{hint}", method=method)


def _chain(
    method: str, handlers: Sequence[Handler], request: dict[str, Any], invoke: Invoke
) -> dict[str, Any]:
    for h in handlers:
        if isinstance(h, NativeHandler):
            out = h.handler(request)
        else:
            try:
                out = invoke(h, method, encode(request))
            except PluginError as exc:
                # As in the Go host, a stage that fails is skipped, not fatal.
                if exc.code not in DECLINE_CODES:
                    log.warning("%s (stage skipped)", exc)
                continue
        if isinstance(out, Mapping):
            request.update(out)
    return request


def _broadcast(
    method: str, handlers: Sequence[Handler], request: Mapping[str, Any], invoke: Invoke
) -> list[BroadcastResult]:
    data = encode(request)
    results = []
    for h in handlers:
        if isinstance(h, NativeHandler):
            try:
                results.append(BroadcastResult(h.name, h.handler(request)))
            except Exception as exc:
                log.exception("native observer %s failed on %s", h.name, method)
                err = NativeHandlerFailed(f"{h.name}: {exc}", method=method)
                results.append(BroadcastResult(h.name, error=err))
            continue
        try:
            results.append(BroadcastResult(h.plugin_id, invoke(h, method, data)))
        except PluginError as exc:
            log.warning("%s (observer failed)", exc)
            results.append(BroadcastResult(h.plugin_id, error=exc))
    return results
