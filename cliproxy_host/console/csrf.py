"""CSRF protection of the console's writes: the session's token, sent back in a header
(htmx) or a form field, and a same-origin check of the Origin header where a browser sends one."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Final

from starlette.requests import Request

from .session import Session

__all__ = ["FIELD", "HEADER", "CsrfRefused", "check_origin", "check_token"]

HEADER: Final = "x-csrf-token"
FIELD: Final = "csrf_token"


class CsrfRefused(Exception):
    """A write without the session's token, or from a page of another origin (403)."""


def check_origin(request: Request) -> None:
    """Refuse a request whose Origin names another site. Browsers send Origin on every
    POST; a client that sends none (curl) is left to the token check."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin != own:
        raise CsrfRefused(
            f"this form was sent from {origin}, not from the console at {own}; "
            "open the console at its own address and try again"
        )


def check_token(request: Request, form: Mapping[str, str], session: Session) -> None:
    """Refuse a write whose token (header or form field) is not the session's."""
    check_origin(request)
    sent = request.headers.get(HEADER) or form.get(FIELD) or ""
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise CsrfRefused(
            "this form's security token is missing or out of date (signed in again "
            "elsewhere, or the server restarted); reload the page and try again"
        )
