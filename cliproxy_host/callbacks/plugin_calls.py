"""host.plugin.call and host.dispatch: a plugin calls another plugin, with a depth limit,
cycle detection through host_callback_id, and a timeout per call (PluginCalls)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..errors import (
    HostCallFailed,
    InvalidRequest,
    PluginCallCycle,
    PluginCallTooDeep,
    PluginError,
    PluginTimeout,
)
from .permissions import Permissions
from .scopes import CALL_CHAIN, FIELD, ScopeTable

DEPTH_KEY: Final = "plugins.plugin-call-depth"
DEFAULT_DEPTH: Final = 8
# Methods no plugin may call on another: the host alone runs a plugin's lifecycle.
CLOSED_PREFIXES: Final = ("plugin.",)

# (target plugin ID, method, request) -> result; raises the target's PluginError.
CallPlugin = Callable[[str, str, Any], Any]
# (method, request, may_take(plugin ID) -> bool) -> the dispatch's answer.
Dispatch = Callable[[str, Mapping[str, Any], Callable[[str], bool]], Any]


class PluginCalls:
    """The two callbacks over the host's call and dispatch, attached once the host is built.

    The chain of plugins a call runs for travels two ways: the scope of an echoed
    host_callback_id keeps the chain it was opened under (so a call from any thread is
    traced), and CALL_CHAIN holds it on the thread running the nested call.
    """

    def __init__(self, scopes: ScopeTable, permissions: Permissions | None = None) -> None:
        self._scopes = scopes
        self._permissions = permissions
        self._call: CallPlugin | None = None
        self._dispatch: Dispatch | None = None
        self._timeout: Callable[[str], float] = lambda _plugin_id: 30.0
        self._depth: Callable[[], int] = lambda: DEFAULT_DEPTH

    def attach(
        self,
        call: CallPlugin,
        dispatch: Dispatch,
        *,
        timeout: Callable[[str], float],
        depth: Callable[[], int],
    ) -> None:
        """`timeout(plugin)` is the caller's call timeout in seconds, `depth()` the limit."""
        self._call, self._dispatch = call, dispatch
        self._timeout, self._depth = timeout, depth

    def call(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.plugin.call {"plugin", "method", "request", "timeout_ms"} -> {"result"}."""
        where = "host.plugin.call"
        target, method = request.get("plugin"), request.get("method")
        if not isinstance(target, str) or not target:
            raise _invalid(f'{where}: "plugin" (the ID of the plugin to call) is required')
        _check_method(where, method)
        assert isinstance(method, str)
        if self._permissions is not None:
            self._permissions.check_call(plugin_id, target, where)
        chain = self._chain(plugin_id, where, request, target)
        call = self._call
        if call is None:
            raise HostCallFailed(f"{where}: this host does not let plugins call each other")
        inner: Any = request.get("request")
        scope = self._scopes.open(target, method) if _is_object(inner) else None
        token = CALL_CHAIN.set(chain)
        try:
            if scope is not None:
                # Opened under the chain: the callee's echo of this ID carries it.
                scope.calls = chain
                inner = {**inner, FIELD: scope.callback_id}
            result = self._timed(plugin_id, where, request, lambda: call(target, method, inner))
        finally:
            CALL_CHAIN.reset(token)
            if scope is not None:
                self._scopes.end(scope.callback_id)
        return {"result": result}

    def dispatch(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.dispatch {"method", "request", "timeout_ms"} -> {"result"}: the method over
        its handlers in priority order and by its mode, leaving out the plugins on the
        call's chain (the caller among them) and those its `call` permission does not name."""
        where = "host.dispatch"
        method = request.get("method")
        _check_method(where, method)
        assert isinstance(method, str)
        inner = request.get("request", {})
        if not _is_object(inner):
            raise _invalid(f'{where}: "request" must be a JSON object')
        chain = self._chain(plugin_id, where, request, None)
        dispatch = self._dispatch
        if dispatch is None:
            raise HostCallFailed(f"{where}: this host does not let plugins dispatch")
        permissions = self._permissions

        def may_take(target: str) -> bool:
            return target not in chain and (
                permissions is None or permissions.may_call(plugin_id, target)
            )

        token = CALL_CHAIN.set(chain)
        try:
            result = self._timed(
                plugin_id, where, request, lambda: dispatch(method, inner, may_take)
            )
        finally:
            CALL_CHAIN.reset(token)
        return {"result": _plain(result)}

    # -- helpers -----------------------------------------------------------------------

    def _chain(
        self, plugin_id: str, where: str, request: Mapping[str, Any], target: str | None
    ) -> tuple[str, ...]:
        scope = self._scopes.get(request.get(FIELD))
        parent = scope.calls if scope is not None else CALL_CHAIN.get()
        chain = (*parent, plugin_id) if not parent or parent[-1] != plugin_id else parent
        if target is not None and target in chain:
            raise PluginCallCycle(
                f"{where}: {' -> '.join((*chain, target))}: plugin {target} is already on"
                " this call's chain; a plugin may not be called back while its own call runs",
                plugin_id=plugin_id,
                method=where,
            )
        limit = self._depth()
        if len(chain) > limit:
            raise PluginCallTooDeep(
                f"{where}: plugin calls nested {len(chain)} deep, over {DEPTH_KEY} ({limit}):"
                f" {' -> '.join(chain)}; raise {DEPTH_KEY} if this depth is meant",
                plugin_id=plugin_id,
                method=where,
            )
        return chain

    def _timed(
        self, plugin_id: str, where: str, request: Mapping[str, Any], run: Callable[[], Any]
    ) -> Any:
        """`run()` on a thread of its own, waited for at most the call's timeout: half the
        caller's own call timeout, or less with "timeout_ms"."""
        limit = self._timeout(plugin_id) / 2
        asked = request.get("timeout_ms")
        if asked is not None:
            if isinstance(asked, bool) or not isinstance(asked, int) or asked <= 0:
                raise _invalid(f'{where}: "timeout_ms" must be a positive integer, got {asked!r}')
            limit = min(limit, asked / 1000)
        box: list[Any] = []
        done = threading.Event()
        context = contextvars.copy_context()

        def work() -> None:
            try:
                box.append((True, context.run(run)))
            except BaseException as exc:  # handed to the waiting caller
                box.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=work, name=f"{where} for {plugin_id}", daemon=True).start()
        if not done.wait(limit):
            raise PluginTimeout(
                f"{where}: no answer within {limit:g} s (timeout_ms, at most half the"
                f" timeout-ms of plugin {plugin_id}); the call goes on unobserved",
                plugin_id=plugin_id,
                method=where,
            )
        ok, value = box[0]
        if ok:
            return value
        raise value


def _check_method(where: str, method: Any) -> None:
    if not isinstance(method, str) or not method:
        raise _invalid(f'{where}: "method" (e.g. "executor.execute") is required')
    if method.startswith(CLOSED_PREFIXES):
        raise _invalid(
            f"{where}: {method} is a lifecycle method, which only the host calls; call a"
            " capability or custom method instead"
        )


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping)


def _plain(result: Any) -> Any:
    """A dispatch answer as JSON: a broadcast's results as objects."""
    if isinstance(result, list):
        return [_plain(item) for item in result]
    name = getattr(result, "name", None)
    if name is not None and hasattr(result, "error"):
        error: PluginError | None = result.error
        if error is not None:
            return {"plugin": name, "error": {"code": error.code, "message": error.message}}
        return {"plugin": name, "result": result.result}
    return result


def _invalid(message: str) -> PluginError:
    return InvalidRequest(message, retryable=False, http_status=400)
