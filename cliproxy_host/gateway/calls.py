"""`POST /v1/plugins/{id}/{method}` and `POST /v1/dispatch/{method}`: a JSON body in, the
plugin's result out, or Server-Sent Events for a streaming method."""

from __future__ import annotations

import re
from typing import Any, Final

import orjson
from fastapi import APIRouter, Depends, Request, Response

from ..abi import METHOD_CAPABILITY
from ..callbacks.scopes import FIELD
from ..errors import DECLINE_CODES, NoHandler, PluginError
from ..host.dispatch import BroadcastResult
from ..host.facade import PluginHost
from ..host.stream import PluginStream
from .errors import GatewayError, error_body
from .keys import ClientAuth, ClientKey
from .offload import Offload
from .slots import Release, StreamSlots
from .sse import EventStream

__all__ = ["STREAMED_METHODS", "calls_router"]

# Lifecycle and operator methods: the host's own business, never a client's.
CLOSED_PREFIXES: Final = ("plugin.", "management.", "auth.", "command_line.")
# Methods whose answer is a stream of chunks, served as Server-Sent Events.
STREAMED_METHODS: Final = frozenset({"executor.execute_stream"})
# Dotted lower-case names, as every capability method is; bounded before any lookup.
_METHOD_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}(?:\.[a-z][a-z0-9_]{0,63}){1,3}")
# Fields the host sets in a request; a client's value would reach into another call's scope.
_HOST_FIELDS: Final = (FIELD, "stream_id")


def calls_router(
    host: PluginHost, auth: ClientAuth, offload: Offload, slots: StreamSlots
) -> APIRouter:
    """The gateway's plugin routes over `host`, each behind the client key."""
    router = APIRouter()
    # A default, not Annotated[...]: the annotations are strings, and `auth` is local.
    key_of = Depends(auth)

    @router.post("/v1/plugins/{plugin_id}/{method}", response_model=None)
    async def call_plugin(
        plugin_id: str, method: str, request: Request, key: ClientKey = key_of
    ) -> Response:
        _check_method(method)
        if not key.allows_plugin(plugin_id):
            raise GatewayError(
                403,
                "plugin_not_allowed_for_key",
                f"client key {key.index} of api-keys may not call plugin {plugin_id}; add it "
                "to the key's `plugins` list in the config",
                plugin=plugin_id,
            )
        body = await _json_object(request)
        if method in STREAMED_METHODS:
            with slots.held(key) as release:
                stream = await offload.run(host.call_stream, plugin_id, method, body)
                return _sse(stream, plugin_id, release)
        result = await offload.run(host.call, plugin_id, method, body)
        return _json(result)

    @router.post("/v1/dispatch/{method}", response_model=None)
    async def dispatch(method: str, request: Request, key: ClientKey = key_of) -> Response:
        _check_method(method)
        if key.plugins is not None:
            raise GatewayError(
                403,
                "dispatch_not_allowed_for_key",
                f"client key {key.index} of api-keys is limited to plugins "
                f"{sorted(key.plugins)}, and dispatch may reach any plugin; call "
                "/v1/plugins/<id>/<method> instead",
            )
        body = await _json_object(request)
        if method in STREAMED_METHODS:
            with slots.held(key) as release:
                plugin_id, stream = await offload.run(_first_stream, host, method, body)
                return _sse(stream, plugin_id, release)
        result = await offload.run(host.dispatch, method, body)
        if isinstance(result, list) and all(isinstance(r, BroadcastResult) for r in result):
            return _json([_observed(r) for r in result])
        return _json(result)

    return router


def _check_method(method: str) -> None:
    if _METHOD_RE.fullmatch(method) is None:
        raise GatewayError(
            400,
            "invalid_method",
            f"{method[:80]!r} is not a method name; a capability method is dotted lower "
            "case, e.g. executor.execute",
        )
    if method.startswith(CLOSED_PREFIXES):
        raise GatewayError(
            404,
            "method_not_served",
            f"{method} is a lifecycle or operator method, which the gateway never serves "
            f"({', '.join(p + '*' for p in CLOSED_PREFIXES)}); the management API and the "
            "command line manage plugins",
        )
    if method not in METHOD_CAPABILITY:
        raise GatewayError(
            404,
            "method_not_served",
            f"{method} is not a capability method (docs/ABI.md lists them); the gateway "
            "serves only those",
        )


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400, "invalid_json", f"the body is not valid JSON ({exc}); send a JSON object"
        ) from None
    if not isinstance(value, dict):
        raise GatewayError(
            400, "invalid_json", f"the body is a JSON {type(value).__name__}; send a JSON object"
        )
    taken = [name for name in _HOST_FIELDS if name in value]
    if taken:
        raise GatewayError(
            400,
            "invalid_json",
            f"the body sets {', '.join(taken)}, which the host sets itself; leave it out",
        )
    return value


def _json(value: Any) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


def _sse(stream: PluginStream, plugin_id: str, release: Release) -> EventStream:
    return EventStream(stream, plugin_id, release.take())


def _observed(result: BroadcastResult) -> dict[str, Any]:
    if result.error is None:
        return {"plugin": result.name, "result": result.result}
    error = result.error
    return {
        "plugin": result.name,
        **error_body(error.code, error.message, result.name, error.retryable),
    }


def _first_stream(
    host: PluginHost, method: str, request: dict[str, Any]
) -> tuple[str, PluginStream]:
    """The stream of the first provider of `method` that does not decline it (FIRST mode)."""
    for plugin_id in host.providers(method):
        try:
            return plugin_id, host.call_stream(plugin_id, method, request)
        except PluginError as exc:
            if exc.code not in DECLINE_CODES:
                raise
    flag = METHOD_CAPABILITY[method]
    raise NoHandler(f"nothing handles {method}; enable a plugin with the {flag} capability")
