"""host_callback_id scopes: the request and plugin a host callback belongs to; cleanups."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Final

log = logging.getLogger(__name__)

# The plugin methods that carry a host_callback_id (the Go host's rpc_schema.go).
SCOPED_METHODS: Final = frozenset(
    {
        "model.for_auth",
        "model.route",
        "auth.login.start",
        "auth.login.poll",
        "auth.refresh",
        "executor.execute",
        "executor.execute_stream",
        "executor.count_tokens",
        "executor.http_request",
        "request.intercept_before",
        "request.intercept_after",
        "request.complete",
        "response.intercept_after",
        "response.intercept_stream_chunk",
        "thinking.apply",
        "management.handle",
    }
)
FIELD: Final = "host_callback_id"
# The plugins whose host.model.* calls the current thread is running, outermost first
# (callbacks/models.py sets it); a scope opened meanwhile keeps it, so a nested call that
# echoes its host_callback_id is counted toward the depth limit from any thread.
MODEL_CHAIN: ContextVar[tuple[str, ...]] = ContextVar("MODEL_CHAIN", default=())
# The same for host.plugin.call / host.dispatch (callbacks/plugin_calls.py): its depth
# limit and cycle detection.
CALL_CHAIN: ContextVar[tuple[str, ...]] = ContextVar("CALL_CHAIN", default=())


class Scope:
    """One plugin call's scope: from just before the call until it returns, or its stream ends."""

    __slots__ = ("callback_id", "calls", "chain", "cleanups", "ended", "method", "plugin_id")

    def __init__(self, callback_id: str, plugin_id: str, method: str) -> None:
        self.callback_id = callback_id
        self.plugin_id = plugin_id
        self.method = method
        self.chain = MODEL_CHAIN.get()
        self.calls = CALL_CHAIN.get()
        self.cleanups: list[Callable[[], object]] = []
        self.ended = False


class ScopeTable:
    """The open scopes by host_callback_id (decimal strings, a per-host counter). Thread-safe.

    IDs are never reused, so opening and looking up need no lock (one dict operation
    each); the lock only orders a cleanup being added against the scope's end.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._scopes: dict[str, Scope] = {}
        self._lock = threading.Lock()

    def open(self, plugin_id: str, method: str) -> Scope:
        scope = Scope(str(next(self._ids)), plugin_id, method)
        self._scopes[scope.callback_id] = scope
        return scope

    def get(self, callback_id: object) -> Scope | None:
        """The open scope of an echoed id; None for an unknown or ended one (a fresh scope)."""
        if not isinstance(callback_id, str):
            return None
        return self._scopes.get(callback_id)

    def add_cleanup(self, callback_id: str, cleanup: Callable[[], object]) -> bool:
        """Run `cleanup` when the scope ends; at once (answering False) if it is not open."""
        scope = self._scopes.get(callback_id)
        if scope is not None:
            with self._lock:
                if not scope.ended:
                    scope.cleanups.append(cleanup)
                    return True
        _run(cleanup)
        return False

    def end(self, callback_id: str) -> None:
        """End the scope: its cleanups run, in the order they were added. Idempotent."""
        scope = self._scopes.pop(callback_id, None)
        if scope is None:
            return
        with self._lock:
            scope.ended = True
            cleanups = scope.cleanups
        for cleanup in cleanups:
            _run(cleanup)

    def __len__(self) -> int:
        return len(self._scopes)


def _run(cleanup: Callable[[], object]) -> None:
    try:
        cleanup()
    except Exception:  # one failed cleanup must not keep the others from running
        log.exception("a host_callback_id cleanup failed")
