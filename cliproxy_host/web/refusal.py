"""Refusal: how an API turns a refusal of the shared middlewares into its own error body."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.types import ASGIApp

__all__ = ["CLOSE", "Refusal"]

# (HTTP status, error code, message, headers) -> the response, in the API's own error shape.
Refusal = Callable[[int, str, str, Mapping[str, str]], ASGIApp]

# A refused request's unread body makes the connection unusable for another request.
CLOSE: Mapping[str, str] = {"Connection": "close"}
