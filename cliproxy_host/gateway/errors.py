"""The gateway's error body, {"error": {"code", "message", "plugin", "retryable"}}: every
failure a /v1 route meets becomes that body here, with the status of its error class. The
model endpoints answer in their client protocol's own error shape instead (protocols.py)."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import PluginError
from .protocols import Protocol, current_protocol, protocol_for

__all__ = ["GatewayError", "error_body", "install_error_handlers", "refusal"]


class GatewayError(Exception):
    """An error answer of the gateway: status, code and a message that says what to do."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        plugin: str | None = None,
        retryable: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.plugin = plugin
        self.retryable = retryable
        self.headers = dict(headers or {})

    @classmethod
    def from_plugin_error(cls, exc: PluginError) -> GatewayError:
        """The error tree on the wire: the class's code, status and retryable."""
        return cls(
            exc.http_status, exc.code, exc.message, plugin=exc.plugin_id, retryable=exc.retryable
        )

    def body(self, protocol: Protocol | None = None) -> dict[str, Any]:
        if protocol is not None:
            return protocol.error_body(self.status, self.code, self.message)
        return error_body(self.code, self.message, self.plugin, self.retryable)

    def response(self, protocol: Protocol | None = None) -> JSONResponse:
        return JSONResponse(self.body(protocol), status_code=self.status, headers=self.headers)


def error_body(code: str, message: str, plugin: str | None, retryable: bool) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "plugin": plugin, "retryable": retryable}}


def refusal(status: int, code: str, message: str, headers: Mapping[str, str]) -> JSONResponse:
    """The shared middlewares' refusals (web/) in the gateway's error body."""
    return GatewayError(status, code, message, headers=headers).response(current_protocol())


# Starlette's own answers: no such route, wrong method.
_HTTP_CODES: Final = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return exc.response(protocol_for(request.url.path))


async def _plugin_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PluginError)
    return GatewayError.from_plugin_error(exc).response(protocol_for(request.url.path))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code) or HTTPStatus(exc.status_code).phrase.lower()
    where = f"{request.method} {request.url.path}"
    message = f"no route {where}" if exc.status_code == 404 else f"{where}: {exc.detail}"
    error = GatewayError(exc.status_code, code.replace(" ", "_"), message, headers=exc.headers)
    return error.response(protocol_for(request.url.path))


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"]) or "request"
    error = GatewayError(400, "invalid_request", f"{where}: {first['msg']}")
    return error.response(protocol_for(request.url.path))


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the gateway's routes raise answer the gateway's error body."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(PluginError, _plugin_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
