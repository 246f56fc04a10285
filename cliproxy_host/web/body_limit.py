"""The cap on request bodies: a larger one is answered 413 before it is read."""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BodyTooLarge
from .refusal import CLOSE, Refusal


class BodyLimit:
    """Pure ASGI middleware: bodies over `cap()` bytes never reach the app.

    A declared Content-Length over the cap is refused before one byte of the body is read
    (the server frames the body by that length, so a smaller one cannot grow). A chunked
    body is read up to the cap and refused as soon as it passes it; one within the cap is
    handed to the app as read. `cap` is asked per request, so a reloaded config applies.
    `api` names the API and `cap_key` the config key (None: a fixed cap) in the refusal,
    which `refuse` writes in the API's own error shape. Requests `exempt` says yes to pass
    unchecked: their route caps the body itself.
    """

    def __init__(
        self,
        app: ASGIApp,
        cap: Callable[[], int],
        *,
        api: str,
        cap_key: str | None,
        refuse: Refusal,
        exempt: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        # Requests whose route caps its own body (an upload streamed to disk).
        self.exempt = exempt
        self.cap = cap
        self.api = api
        self.cap_key = cap_key
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt is not None and self.exempt(scope)):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cap = self.cap()
        length = headers.get("content-length")
        if length is not None:
            # A malformed length never gets here: the server refuses it.
            if length.isdigit() and int(length) > cap:
                await self._refuse(scope, receive, send, f"{int(length)} bytes", cap)
                return
            await self.app(scope, receive, send)
            return
        if "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body at all
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away while sending
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                await self._refuse(scope, receive, send, f"more than {cap} bytes", cap)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, size: str, cap: int
    ) -> None:
        if self.cap_key is None:
            fix = ": send a smaller body"
        else:
            fix = f" ({self.cap_key}): send a smaller body or raise {self.cap_key} in the config"
        message = f"the request body is {size}; {self.api} takes at most {cap} bytes{fix}"
        response = self.refuse(BodyTooLarge.default_http_status, BodyTooLarge.code, message, CLOSE)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the body read already, then what the server says next."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
