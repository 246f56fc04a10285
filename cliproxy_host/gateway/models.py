"""The model endpoints: GET /v1/models, POST /v1/chat/completions, /v1/responses and
/v1/messages, each a run of the model pipeline in its client protocol (protocols.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..errors import NoHandler, PluginError
from ..host.facade import PluginHost
from ..pipeline.models import ModelChunk, ModelRequest, ModelResponse
from .errors import GatewayError
from .keys import ClientAuth, ClientKey
from .offload import Offload
from .protocols import CHAT, MESSAGES, RESPONSES, Protocol
from .pump import ChunkPump
from .slots import StreamSlots

__all__ = ["models_router"]

MEDIA_SSE: Final = "text/event-stream"
# Headers of the executor's answer that describe its transport, not its content.
_HOP_HEADERS: Final = frozenset(
    {"connection", "content-length", "content-type", "transfer-encoding", "content-encoding"}
)
# The client's headers the executor must never see: they hold the client key.
_SECRET_HEADERS: Final = frozenset({"authorization", "x-api-key", "cookie"})


def models_router(
    host: PluginHost, auth: ClientAuth, offload: Offload, slots: StreamSlots
) -> APIRouter:
    """The model routes over `host`'s pipeline, each behind the client key."""
    router = APIRouter()
    key_of = Depends(auth)

    @router.get("/v1/models", response_model=None)
    async def list_models(key: ClientKey = key_of) -> Response:
        entries = await offload.run(host.models)
        seen: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if (
                entry.id not in seen
                and key.allows_model(entry.id)
                and key.allows_plugin(entry.plugin_id)
            ):
                seen[entry.id] = {
                    "id": entry.id,
                    "object": "model",
                    "created": 0,
                    "owned_by": entry.provider or entry.plugin_id,
                }
        return _json({"object": "list", "data": list(seen.values())})

    for protocol in (CHAT, RESPONSES, MESSAGES):
        router.add_api_route(
            protocol.path,
            _endpoint(host, protocol, key_of, offload, slots),
            methods=["POST"],
            response_model=None,
            name=protocol.format,
        )
    return router


def _endpoint(
    host: PluginHost, protocol: Protocol, key_of: Any, offload: Offload, slots: StreamSlots
) -> Any:
    async def run(request: Request, key: ClientKey = key_of) -> Response:
        raw, body = await _model_body(request)
        model = _model_of(body)
        if not key.allows_model(model):
            raise GatewayError(
                403,
                "model_not_allowed_for_key",
                f"client key {key.index} of api-keys may not use model {model}; add it to "
                "the key's `models` list in the config",
            )
        stream = body.get("stream") is True
        req = ModelRequest(
            model=model,
            body=raw,
            entry_format=protocol.format,
            stream=stream,
            headers=_forwarded(request),
            executors=key.plugins,
        )
        if not stream:
            try:
                answer = await offload.run(host.execute, req)
            except NoHandler as exc:
                raise _unknown_model(model, exc) from None
            return _answer(answer)
        with slots.held(key) as release:
            pump = ChunkPump(host.execute_stream(req), name=f"v1-stream {model[:40]}")
            try:
                first = await pump.next()
            except NoHandler as exc:
                pump.close()
                raise _unknown_model(model, exc) from None
            except BaseException:
                pump.close()
                raise
            return ModelStream(protocol, pump, first, release.take())

    return run


async def _model_body(request: Request) -> tuple[bytes, dict[str, Any]]:
    raw = await request.body()
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
    return raw, value


def _model_of(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise GatewayError(
            400, "invalid_request", 'the body needs a "model": the ID of a model of GET /v1/models'
        )
    return model.strip()


def _unknown_model(model: str, exc: PluginError) -> GatewayError:
    return GatewayError(
        404,
        "model_not_found",
        f"no executor serves model {model!r}; GET /v1/models lists the models served "
        f"({exc.message})",
    )


def _forwarded(request: Request) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        if name not in _SECRET_HEADERS:
            out.setdefault(name, []).append(value)
    return {name: tuple(values) for name, values in out.items()}


def _answer(answer: ModelResponse) -> Response:
    headers = {
        name: values[-1]
        for name, values in answer.headers.items()
        if values and name.lower() not in _HOP_HEADERS
    }
    return Response(
        answer.body,
        status_code=answer.status_code,
        media_type="application/json",
        headers=headers,
    )


def _json(value: Any) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


async def _events(
    protocol: Protocol, pump: ChunkPump[ModelChunk], first: ModelChunk | None
) -> AsyncIterator[bytes]:
    """The protocol's events: the chunks, then its end marker or one error event. Closing
    the pump is in `finally`: a client gone cancels this generator, the pump stops, and
    the pipeline closes the plugin's stream."""
    try:
        chunk = first
        while chunk is not None:
            # What has arrived meanwhile goes out in the same write.
            more = pump.ready()
            if more:
                yield b"".join(protocol.frame(c.payload) for c in (chunk, *more))
            else:
                yield protocol.frame(chunk.payload)
            chunk = await pump.next()
        if protocol.done:
            yield protocol.done
    except PluginError as exc:
        yield protocol.error_event(exc.http_status, exc.code, exc.message)
    finally:
        pump.close()


class ModelStream(StreamingResponse):
    """The SSE answer of one streamed run; the pump is closed and the key's stream slot
    given back when the answer is over, also when the server never started the body (a
    client gone before the first byte)."""

    def __init__(
        self,
        protocol: Protocol,
        pump: ChunkPump[ModelChunk],
        first: ModelChunk | None,
        end: Callable[[], None],
    ) -> None:
        super().__init__(
            _events(protocol, pump, first),
            media_type=MEDIA_SSE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._pump = pump
        self._end = end  # gives the key's stream slot back, once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._pump.close()
            end, self._end = self._end, _nothing
            end()


def _nothing() -> None:
    pass
