"""The cap on a management request's headers: too many or too large answer 431 at once."""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import HeadersTooLarge
from .errors import ApiError

MAX_HEADERS: Final = 100
MAX_HEADER_BYTES: Final = 64 * 1024  # names and values, summed
# The server's own bound on a request head (request line and headers, uvicorn's
# h11_max_incomplete_event_size): above the cap, so that the cap answers first with its
# JSON body; a head beyond even this is refused by the server with a plain 400.
SERVER_HEAD_BYTES: Final = MAX_HEADER_BYTES + 16 * 1024


class HeaderLimit:
    """Pure ASGI middleware: a request with more than MAX_HEADERS headers, or more than
    MAX_HEADER_BYTES of them, is answered 431 before any route (or the auth) runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            size = sum(len(name) + len(value) for name, value in headers)
            problem = None
            if len(headers) > MAX_HEADERS:
                problem = f"{len(headers)} headers; the management API takes at most {MAX_HEADERS}"
            elif size > MAX_HEADER_BYTES:
                problem = (
                    f"{size} bytes of headers; the management API takes at most "
                    f"{MAX_HEADER_BYTES} bytes"
                )
            if problem is not None:
                error = ApiError(
                    HeadersTooLarge.default_http_status,
                    HeadersTooLarge.code,
                    f"the request has {problem}: send fewer or shorter headers",
                    # The body, if any, is left unread: the connection cannot carry another request.
                    headers={"Connection": "close"},
                )
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
