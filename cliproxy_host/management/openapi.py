"""The OpenAPI document beyond FastAPI's defaults: the management key's two security
schemes, and no 422 answer the API never gives (a bad body is 400 invalid_body)."""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI, Security
from fastapi.params import Depends
from fastapi.security import APIKeyHeader, HTTPBearer

# auto_error=False: they only declare the schemes (the docs page then offers to send the
# key); ManagementAuth checks it, with its own error bodies.
_BEARER: Final = HTTPBearer(
    scheme_name="bearer",
    description="the management key as `Authorization: Bearer <key>`",
    auto_error=False,
)
_KEY_HEADER: Final = APIKeyHeader(
    name="X-Management-Key",
    scheme_name="managementKey",
    description="the management key as `X-Management-Key: <key>`",
    auto_error=False,
)
# Either scheme admits a request: each is a security requirement of its own.
SECURITY: Final[tuple[Depends, ...]] = (Security(_BEARER), Security(_KEY_HEADER))


def drop_validation_errors(app: FastAPI) -> None:
    """Make app's document leave out FastAPI's 422 responses and their schemas."""
    build = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
