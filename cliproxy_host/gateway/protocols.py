"""The client protocols of the model endpoints: each route's format, its error body and how
its Server-Sent Events are framed (OpenAI chat, OpenAI Responses, Anthropic Messages)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "CHAT",
    "MESSAGES",
    "PROTOCOLS",
    "RESPONSES",
    "Protocol",
    "ProtocolScope",
    "current_protocol",
    "protocol_for",
]

# Error types by status; both OpenAI and Anthropic name their errors this way.
_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def _error_type(status: int) -> str:
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def _openai_error(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": _error_type(status), "code": code, "param": None}}


def _anthropic_error(status: int, code: str, message: str) -> dict[str, Any]:
    kind = "request_too_large" if status == 413 else _error_type(status)
    return {"type": "error", "error": {"type": kind, "message": message}}


def _data_only(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def _typed(payload: bytes) -> bytes:
    """`event: <type>` from the payload's "type" field, as Responses and Anthropic send."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _data_only(payload)
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str) or not kind or "\n" in kind or "\r" in kind:
        return _data_only(payload)
    return b"event: " + kind.encode() + b"\n" + _data_only(payload)


@dataclass(frozen=True, slots=True)
class Protocol:
    """One client protocol: the route, the pipeline's entry format, errors and SSE."""

    name: str
    path: str
    format: str
    error_body: Callable[[int, str, str], dict[str, Any]]
    frame_json: Callable[[bytes], bytes]
    done: bytes  # written after the last chunk of a stream that ended well
    typed_error_event: bool  # an error in a stream travels as `event: error`

    def frame(self, payload: bytes) -> bytes:
        """One chunk as this protocol's event. A chunk that is already SSE (the executor
        speaks the protocol on the wire) passes untouched; a JSON one gets the framing."""
        if payload.startswith((b"data:", b"event:", b":")):
            return payload if payload.endswith(b"\n\n") else payload.rstrip(b"\n") + b"\n\n"
        return self.frame_json(payload.strip())

    def error_event(self, status: int, code: str, message: str) -> bytes:
        data = orjson.dumps(self.error_body(status, code, message))
        if self.typed_error_event:
            return b"event: error\n" + _data_only(data)
        return _data_only(data)


CHAT: Final = Protocol(
    "OpenAI chat completions",
    "/v1/chat/completions",
    "openai",
    _openai_error,
    _data_only,
    b"data: [DONE]\n\n",
    typed_error_event=False,
)
RESPONSES: Final = Protocol(
    "OpenAI responses",
    "/v1/responses",
    "openai-response",
    _openai_error,
    _typed,
    b"",
    typed_error_event=True,
)
MESSAGES: Final = Protocol(
    "Anthropic messages",
    "/v1/messages",
    "claude",
    _anthropic_error,
    _typed,
    b"",
    typed_error_event=True,
)
# GET /v1/models answers OpenAI's shape, so its errors do too.
MODELS: Final = Protocol(
    "OpenAI models", "/v1/models", "openai", _openai_error, _data_only, b"", False
)
PROTOCOLS: Final[Mapping[str, Protocol]] = {p.path: p for p in (CHAT, RESPONSES, MESSAGES, MODELS)}

_current: ContextVar[Protocol | None] = ContextVar("gateway_protocol", default=None)


def protocol_for(path: str) -> Protocol | None:
    """The protocol whose route `path` is (GET /v1/models/{id} is OpenAI's too)."""
    found = PROTOCOLS.get(path)
    if found is None and path.startswith("/v1/models/"):
        return MODELS
    return found


def current_protocol() -> Protocol | None:
    """The protocol of the request being answered, for refusals that see no request."""
    return _current.get()


class ProtocolScope:
    """Notes the request's protocol, so that the caps' refusals (413, 414, 431), which run
    before any route, answer in the client's own error shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _current.set(protocol_for(scope["path"]))
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)
