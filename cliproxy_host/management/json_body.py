"""The host routes' JSON bodies: Content-Type, JSON syntax and nesting depth are checked
before FastAPI parses the body, and each refusal says what to send instead."""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any, Final

from fastapi import Request, Response
from fastapi.routing import APIRoute

from .errors import ApiError

# Levels of arrays and objects, the body itself the first: config mappings are shallow,
# and deeper values only cost the YAML writer and the plugins recursion.
MAX_DEPTH: Final = 32
_SEND: Final = "send Content-Type: application/json with a JSON object"


class JsonBodyRoute(APIRoute):
    """An APIRoute whose body, if it takes one, must be a JSON document of bounded depth."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            await check_json_body(request)
            return await handler(request)

        return checked


async def check_json_body(request: Request) -> None:
    """Raise ApiError 415 or 400 unless the body is JSON no deeper than MAX_DEPTH.

    An empty body passes: FastAPI reports the missing body. The parsed JSON stays cached
    on the request, so FastAPI does not parse it again.
    """
    body = await request.body()
    if not body:
        return
    content_type = request.headers.get("content-type")
    if content_type is None or not _is_json(content_type):
        sent = f"Content-Type {content_type}" if content_type else "no Content-Type"
        raise ApiError(415, "unsupported_media_type", f"the body came with {sent}; {_SEND}")
    try:
        value = await request.json()
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "invalid_body",
            f"the body is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}); "
            "send a JSON object",
        ) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError:  # not UTF-8, UTF-16 or UTF-32
        raise ApiError(
            400, "invalid_body", "the body is not valid JSON (not UTF-8); send a JSON object"
        ) from None
    if _deeper_than(value, MAX_DEPTH):
        raise _too_deep()


def _is_json(content_type: str) -> bool:
    # The rule FastAPI applies: application/json or application/<anything>+json.
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _too_deep() -> ApiError:
    return ApiError(
        400,
        "invalid_body",
        f"the body nests arrays and objects deeper than the host takes (at most {MAX_DEPTH} "
        "levels); flatten the value",
    )


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels in value (iteratively: no
    recursion to run out of)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
