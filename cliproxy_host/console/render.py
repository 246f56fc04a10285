"""Rendering the console's templates (Jinja2, autoescaped) into responses that carry the
console's security headers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

__all__ = ["PAGE_POLICY", "STATIC_DIR", "page"]

HERE: Final = Path(__file__).resolve().parent
STATIC_DIR: Final = HERE / "static"

# Everything the console loads is its own: no CDN, no inline script or style (htmx is told
# not to add its indicator style), images only its own or data: logos, frames only its own
# (plugin resources), and no other site may frame the console.
PAGE_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages show live state and carry the CSRF token: never from a cache.
    "Cache-Control": "no-store",
}

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def page(
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """`template` rendered with `context`, as an HTML response with the console's headers."""
    body = _env.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers={**_HEADERS, **(headers or {})})
