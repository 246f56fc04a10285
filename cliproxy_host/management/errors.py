"""API errors as the Go host writes them, {"error": "<code>", "message": "..."}: every
failure a route can meet is turned into that body here, and only here, with one of the codes
of ERROR_CODES (the README's table and the OpenAPI document list the same)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors
from ..errors import PluginError


@dataclass(frozen=True)
class ErrorCode:
    status: int
    meaning: str


def _tree(cls: type[PluginError], meaning: str) -> tuple[str, ErrorCode]:
    return cls.code, ErrorCode(cls.default_http_status, meaning)


# Every code the management API answers; README.md's error table lists exactly these.
ERROR_CODES: Final[Mapping[str, ErrorCode]] = dict(
    sorted(
        [
            ("bad_request", ErrorCode(400, "the request could not be parsed at all")),
            ("invalid_body", ErrorCode(400, "the body is not JSON, too deep, or has a bad field")),
            _tree(errors.InvalidPluginId, "the path's plugin ID does not match the ID pattern"),
            _tree(errors.InvalidConfig, "a config value the plugin or the host refuses"),
            ("missing_management_key", ErrorCode(401, "no management key was sent")),
            ("invalid_management_key", ErrorCode(401, "the management key sent is wrong")),
            ("resource_link_expired", ErrorCode(401, "a signed resource link past its expiry")),
            (
                "invalid_resource_link",
                ErrorCode(403, "a resource link tampered with, or for another path or method"),
            ),
            (
                "remote_management_disabled",
                ErrorCode(403, "a client other than loopback, and allow-remote is false"),
            ),
            ("management_key_not_set", ErrorCode(403, "the host has no management key")),
            _tree(errors.PluginNotFound, "no plugin file or config entry has this ID"),
            ("not_found", ErrorCode(404, "no route or resource has this path")),
            ("method_not_allowed", ErrorCode(405, "the path exists; `Allow` lists its methods")),
            # 409, not the class's 503: the host's routes say it of a plugin still loading.
            (errors.PluginBusy.code, ErrorCode(409, "the plugin is still loading; retry")),
            _tree(errors.BodyTooLarge, "the body is larger than max-body-bytes; nothing read"),
            _tree(errors.UriTooLong, "the path and query are longer than 8 KiB"),
            _tree(errors.HeadersTooLarge, "more than 100 headers or 64 KiB of them"),
            (
                "unsupported_media_type",
                ErrorCode(415, "a body that is not Content-Type: application/json"),
            ),
            ("too_many_attempts", ErrorCode(429, "too many wrong keys; wait `Retry-After` s")),
            _tree(errors.ConfigSaveFailed, "the config file or a plugin file was not written"),
            _tree(errors.ConfigConflict, "another replica changed the entry first; read, retry"),
            ("plugin_error", ErrorCode(502, "a plugin-owned route's plugin failed")),
            # The plugin store and uploads (the Go host's codes).
            _tree(errors.InvalidRequest, "a store install's version or isolation disagree"),
            _tree(errors.StoreSourceNotFound, "`?source=` names no configured store source"),
            _tree(errors.StoreSourceRequired, "several sources list the plugin; `sources`"),
            _tree(errors.StoreSourceConflict, "the plugin was installed from another source"),
            _tree(errors.StoreSourceInvalid, "two plugins.store-sources share a source ID"),
            _tree(errors.PluginDirectoryInvalid, "the plugins dir cannot take the file"),
            _tree(errors.StoreRegistryFailed, "no store source could be read"),
            _tree(errors.PluginManifestInvalid, "no such version, or no artifact for here"),
            _tree(errors.PluginInstallFailed, "download, size, sha256 or zip layout refused"),
            _tree(errors.UploadInvalid, "an uploaded file's sha256, zip layout or header"),
            # An installed file's signature (plugins.trusted-keys, require-signature).
            _tree(errors.SignatureMissing, "require-signature is on and no signature came"),
            _tree(errors.SignatureInvalid, "the signature is malformed or by no trusted key"),
        ]
    )
)


class ErrorBody(BaseModel):
    """Every error answer of the management API."""

    error: str = Field(
        description="what went wrong, as a code of the README's error table",
        json_schema_extra={"enum": list(ERROR_CODES)},
    )
    message: str = Field(description="what went wrong, and what to do about it")


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
    """The OpenAPI `responses` of a route that can answer these error statuses, each with
    the codes it stands for."""
    return {s: {"model": ErrorBody, "description": _described(s)} for s in statuses}


def _described(status: int) -> str:
    codes = ", ".join(f"`{c}`" for c, e in ERROR_CODES.items() if e.status == status)
    return f"{HTTPStatus(status).phrase}: {codes}"


def plugin_route_failed(exc: PluginError) -> ApiError:
    """What a plugin-owned route answers when its plugin fails: whatever the plugin's own
    code, the caller sees a bad gateway (the host's routes answer the error's own code)."""
    return ApiError(502, "plugin_error", str(exc))


def refusal(status: int, code: str, message: str, headers: Mapping[str, str]) -> JSONResponse:
    """The shared middlewares' refusals (web/) in this API's error body."""
    return ApiError(status, code, message, headers=headers).response()


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


# Starlette's and FastAPI's own answers: no such route, wrong method, a body they could not
# parse (the JSON routes check bodies first, so that one should not happen).
_HTTP_CODES: Final = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (no such route, method not allowed) in the same body."""
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code) or HTTPStatus(exc.status_code).phrase.lower()
    code = code.replace(" ", "_")
    headers = dict(exc.headers or {})
    message = str(exc.detail)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message = f"no route {where}"
    elif exc.status_code == 405 and "Allow" in headers:
        # Starlette lists the methods in set order; sorted, as the host's own 405 does.
        allow = ", ".join(sorted(m.strip() for m in headers["Allow"].split(",")))
        headers["Allow"] = allow
        message = f"{request.url.path} does not answer {request.method}; use {allow}"
    return ApiError(exc.status_code, code, message, headers=headers).response()


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app's routes raise answer an ErrorBody."""
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(PluginError, plugin_error_handler)
    app.add_exception_handler(RequestValidationError, invalid_body_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
