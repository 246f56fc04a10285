"""The API documentation pages (Swagger UI at /docs, the document at /openapi.json), served
from the fastapi-offline package's files so that they work without internet access."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any, Final

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse

from .errors import ApiError

DOCS_URL: Final = "/docs"
OPENAPI_URL: Final = "/openapi.json"
ASSETS_URL: Final = "/docs/assets"
OAUTH2_REDIRECT_URL: Final = "/docs/oauth2-redirect"

# The only files served, with their types: the path names one of these or nothing.
ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
# validatorUrl None: Swagger UI would otherwise send the document to an online validator.
_UI_PARAMETERS: Final[dict[str, Any]] = {"validatorUrl": None}


def docs_router(app: FastAPI, network: Callable[[Request], Awaitable[None]]) -> APIRouter:
    """The docs routes of app. They need no management key (a browser cannot send a header
    to load a page; they describe the API and hold no data) but do pass `network`, the
    rule on who may connect at all."""
    router = APIRouter(include_in_schema=False, dependencies=[Depends(network)])

    @router.get(DOCS_URL)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_ui_parameters=_UI_PARAMETERS,
        )

    @router.get(OAUTH2_REDIRECT_URL)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get(f"{ASSETS_URL}/{{name}}")
    async def asset(name: str) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise ApiError(404, "not_found", f"no docs asset {name}; there are {sorted(ASSETS)}")
        data = files("fastapi_offline").joinpath("static", name).read_bytes()
        # The files change only with the package: a browser may keep them for a day.
        headers = {"Cache-Control": "public, max-age=86400"}
        return Response(data, media_type=media_type, headers=headers)

    @router.get(OPENAPI_URL)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    return router
