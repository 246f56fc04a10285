"""API errors as the Go host writes them, {"error": "<code>", "message": "..."}: every
failure a route can meet is turned into that body here, and only here."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import PluginError


class ErrorBody(BaseModel):
    """Every error answer of the management API."""

    error: str
    message: str


class ApiError(Exception):
    """An error answer: HTTP status, machine-readable code, a message that says what to do."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def response(self) -> JSONResponse:
        body = {"error": self.code, "message": self.message, **self.extra}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route that can answer these error statuses."""
    return {s: {"model": ErrorBody, "description": HTTPStatus(s).phrase} for s in statuses}


def plugin_route_failed(exc: PluginError) -> ApiError:
    """What a plugin-owned route answers when its plugin fails: whatever the plugin's own
    code, the caller sees a bad gateway (the host's routes answer the error's own code)."""
    return ApiError(502, "plugin_error", str(exc))


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def plugin_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The error tree on the wire: the class's code and HTTP status, the error's message."""
    assert isinstance(exc, PluginError)
    return ApiError(exc.http_status, exc.code, exc.message).response()


async def invalid_body_handler(request: Request, exc: Exception) -> JSONResponse:
    """A request FastAPI could not validate: 400 invalid_body naming the first bad field."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
    return ApiError(400, "invalid_body", f"{where}: {first['msg']}").response()


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (no such route, method not allowed) in the same body."""
    assert isinstance(exc, StarletteHTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    return ApiError(exc.status_code, code, str(exc.detail), headers=exc.headers).response()


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app's routes raise answer an ErrorBody."""
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(PluginError, plugin_error_handler)
    app.add_exception_handler(RequestValidationError, invalid_body_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
