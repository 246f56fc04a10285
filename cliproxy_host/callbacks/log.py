"""host.log: a plugin's log line, written to Python logging under the plugin's own logger."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from ..envelope import ci_get
from .scopes import Scope

TRACE: Final = 5
logging.addLevelName(TRACE, "TRACE")

LOGGER_PREFIX: Final = "cliproxy_host.plugin."
DEFAULT_MESSAGE: Final = "plugin log"

_LEVELS: Final[dict[str, int]] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    # Go loggers have these; a plugin built for the Go host may send them.
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "critical": logging.CRITICAL,
}
# A value with any of these is quoted, so that one field can't pass for several.
_NEEDS_QUOTES: Final = re.compile(r'[\s"=\\\x00-\x1f]')


# logging.getLogger takes the logging module's lock on every call; loggers live forever
# anyway, so each plugin's is looked up once.
_loggers: dict[str, logging.Logger] = {}


def plugin_logger(plugin_id: str) -> logging.Logger:
    """The logger a plugin's host.log lines go to."""
    logger = _loggers.get(plugin_id)
    if logger is None:
        logger = _loggers.setdefault(plugin_id, logging.getLogger(LOGGER_PREFIX + plugin_id))
    return logger


def host_log(
    plugin_id: str, request: Mapping[str, Any], scope: Scope | None = None
) -> dict[str, Any]:
    """Answer host.log: log the line with the plugin ID and fields attached; result `{}`.

    With the scope of an echoed host_callback_id, the record also names the call it
    belongs to (`host_callback_id`, `request_plugin`, `request_method`).
    """
    name = request["level"] if "level" in request else ci_get(request, "level")
    level = _LEVELS.get(name) if isinstance(name, str) else logging.DEBUG
    if level is None:  # not spelled in lower case, or unknown
        level = _LEVELS.get(name.lower(), logging.DEBUG)
    logger = _loggers.get(plugin_id) or plugin_logger(plugin_id)
    # Rendering is skipped for disabled levels: plugins may log a lot at trace/debug.
    if logger.isEnabledFor(level):
        message = ci_get(request, "message")
        if message is None or message == "":
            message = DEFAULT_MESSAGE
        elif not isinstance(message, str):
            message = _render_value(message)
        fields = ci_get(request, "fields")
        if fields is None:
            fields = {}
        elif not isinstance(fields, dict):
            fields = {"fields": fields}
        extra = {"plugin_id": plugin_id, "plugin_fields": fields}
        if scope is not None:
            extra["host_callback_id"] = scope.callback_id
            extra["request_plugin"] = scope.plugin_id
            extra["request_method"] = scope.method
        logger.log(level, message + _render_fields(fields), extra=extra)
    return {}


def _render_fields(fields: Mapping[str, Any]) -> str:
    return "".join(f" {key}={_render_value(value)}" for key, value in fields.items())


def _render_value(value: Any) -> str:
    if isinstance(value, str) and value and _NEEDS_QUOTES.search(value) is None:
        return value
    return orjson.dumps(value).decode("utf-8")
