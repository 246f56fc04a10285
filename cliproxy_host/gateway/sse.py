"""Server-Sent Events for a plugin's stream: one `data:` event per chunk, then `done` or
`error`. A chunk whose payload is UTF-8 JSON travels as {"json": value}, any other payload
as {"base64": "..."}, so a client never has to guess which one it got."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..errors import PluginError
from ..host.stream import PluginStream
from .errors import error_body

__all__ = ["MEDIA_TYPE", "EventStream", "event", "payload_data", "stream_events"]

MEDIA_TYPE: Final = "text/event-stream"


def event(data: Any, name: str | None = None) -> bytes:
    """One event; orjson writes one line, so `data:` needs no splitting."""
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def payload_data(payload: bytes) -> dict[str, Any]:
    """A chunk's payload as event data: {"json": value} or {"base64": "..."}."""
    try:
        return {"json": orjson.loads(payload)}
    except orjson.JSONDecodeError:  # also for bytes that are not UTF-8
        return {"base64": base64.b64encode(payload).decode("ascii")}


async def stream_events(
    stream: PluginStream, plugin_id: str, done: Callable[[], None] = lambda: None
) -> AsyncIterator[bytes]:
    """The events of `stream`: `headers`, the chunks, then `done` or one `error` event.

    Closing the stream is in `finally`: when the client goes away the server cancels this
    generator, the stream is aborted, and the plugin's next emit fails. `done` runs after.
    """
    try:
        yield event({"headers": stream.headers}, "headers")
        async for chunk in stream:
            if chunk.error:
                if chunk.payload:
                    yield event(payload_data(chunk.payload))
                yield event(error_body("stream_error", chunk.error, plugin_id, False), "error")
                return
            yield event(payload_data(chunk.payload))
        yield event({}, "done")
    except PluginError as exc:
        body = error_body(exc.code, exc.message, exc.plugin_id or plugin_id, exc.retryable)
        yield event(body, "error")
    finally:
        stream.close()
        done()


class EventStream(StreamingResponse):
    """The SSE answer of one plugin stream. `end` runs once, when the answer is over,
    also when the server never started the body (a client gone before the first byte),
    where the generator's own `finally` would never run."""

    def __init__(self, stream: PluginStream, plugin_id: str, end: Callable[[], None]) -> None:
        over = False

        def ended() -> None:
            nonlocal over
            if not over:  # the generator's `finally` and this answer's both call it
                over = True
                stream.close()
                end()

        super().__init__(
            stream_events(stream, plugin_id, ended),
            media_type=MEDIA_TYPE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._ended = ended

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._ended()
