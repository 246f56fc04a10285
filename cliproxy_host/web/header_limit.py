"""The caps on a request's head: a target over its cap answers 414, too many
or too large headers 431, at once."""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import HeadersTooLarge, UriTooLong
from .refusal import CLOSE, Refusal

MAX_TARGET_BYTES: Final = 8 * 1024  # the request target: path, "?" and query, as sent
MAX_HEADERS: Final = 100
MAX_HEADER_BYTES: Final = 64 * 1024  # names and values, summed
# The server's own bound on a request head (request line and headers, uvicorn's
# h11_max_incomplete_event_size): above the caps, so that they answer first with their
# JSON body; a head beyond even this may be refused by the server with a plain 400.
SERVER_HEAD_BYTES: Final = MAX_TARGET_BYTES + MAX_HEADER_BYTES + 16 * 1024


class HeaderLimit:
    """Pure ASGI middleware: a request over a cap of its head is answered before any
    route (or the auth) runs; its body, if any, is left unread. `api` names the API in the
    refusal, which `refuse` writes in the API's own error shape."""

    def __init__(self, app: ASGIApp, *, api: str, refuse: Refusal) -> None:
        self.app = app
        self.api = api
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = _over_a_cap(scope, self.api) if scope["type"] == "http" else None
        if error is None:
            await self.app(scope, receive, send)
        else:
            await self.refuse(*error, CLOSE)(scope, receive, send)


def _over_a_cap(scope: Scope, api: str) -> tuple[int, str, str] | None:
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    target = len(raw_path) + (len(query) + 1 if query else 0)  # "?" counts too
    if target > MAX_TARGET_BYTES:
        return (
            UriTooLong.default_http_status,
            UriTooLong.code,
            f"the request's path and query are {target} bytes; {api} takes at "
            f"most {MAX_TARGET_BYTES}: send a shorter URL",
        )
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    size = sum(len(name) + len(value) for name, value in headers)
    if len(headers) > MAX_HEADERS:
        problem = f"{len(headers)} headers; {api} takes at most {MAX_HEADERS}"
    elif size > MAX_HEADER_BYTES:
        problem = f"{size} bytes of headers; {api} takes at most {MAX_HEADER_BYTES} bytes"
    else:
        return None
    return (
        HeadersTooLarge.default_http_status,
        HeadersTooLarge.code,
        f"the request has {problem}: send fewer or shorter headers",
    )
