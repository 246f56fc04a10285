"""JSON envelopes: encode, decode into a result or a PluginError, base64 fields, folded keys."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

import orjson

from .errors import PluginCallFailed, PluginError, PluginResponseError

_OK_EMPTY: Final = b'{"ok":true,"result":{}}'


def ok(result: Any) -> bytes:
    if type(result) is dict and not result:  # host.log and most callbacks answer {}
        return _OK_EMPTY
    return orjson.dumps({"ok": True, "result": result})


def error(
    code: str, message: str, *, retryable: bool | None = None, http_status: int | None = None
) -> bytes:
    body: dict[str, Any] = {"code": code, "message": message}
    if retryable is not None:
        body["retryable"] = retryable
    if http_status is not None:
        body["http_status"] = http_status
    return orjson.dumps({"ok": False, "error": body})


def ci_get(obj: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Read a key the way the Go host does: exact spelling first, then case-insensitively."""
    if key in obj:
        return obj[key]
    folded = key.casefold()
    for name, value in obj.items():
        if isinstance(name, str) and name.casefold() == folded:
            return value
    return default


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(value: Any, field: str) -> bytes:
    """Decode a base64 byte field; None and "" are empty. Raises ValueError naming the field."""
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} must be a base64 string, got {type(value).__name__}")
    try:
        # strict_mode rejects what validate=True does (characters outside the alphabet,
        # bad padding, data after it) without base64's regex pass over the whole string:
        # half the time on large payloads.
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"field {field!r} is not valid base64: {exc}") from None


def _loads(data: bytes, plugin_id: str | None, method: str | None) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if isinstance(data, bytes | bytearray | memoryview):
            try:
                bytes(data).decode("utf-8")
            except UnicodeDecodeError as uexc:
                reason = f"response is not valid UTF-8 ({uexc.reason} at byte {uexc.start})"
                raise PluginResponseError(
                    f"{reason}; envelopes must be UTF-8 JSON",
                    plugin_id=plugin_id,
                    method=method,
                ) from None
        raise PluginResponseError(
            f"response is not JSON ({exc}); answer an envelope such as "
            '{"ok": true, "result": {...}}',
            plugin_id=plugin_id,
            method=method,
        ) from None


def _error_from_body(body: Any, plugin_id: str | None, method: str | None) -> PluginError | None:
    if not isinstance(body, Mapping):
        return None
    code = ci_get(body, "code")
    message = ci_get(body, "message")
    if not isinstance(code, str) or not code:
        return None
    retryable = ci_get(body, "retryable")
    http_status = ci_get(body, "http_status")
    return PluginError.from_code(
        code,
        message if isinstance(message, str) else "",
        plugin_id=plugin_id,
        method=method,
        retryable=retryable if isinstance(retryable, bool) else None,
        http_status=http_status if isinstance(http_status, int) else None,
    )


_MISSING: Final = object()


def decode(data: bytes, *, plugin_id: str | None = None, method: str | None = None) -> Any:
    """The result of an envelope, or the PluginError it carries."""
    # Fast path: a well-formed ok envelope with the keys spelled as written.
    try:
        env = orjson.loads(data)
    except orjson.JSONDecodeError:
        env = None
    if type(env) is dict and env.get("ok") is True:
        result = env.get("result", _MISSING)
        if result is not _MISSING:
            return result
    return _decode_slow(data, plugin_id, method)


def _decode_slow(data: bytes, plugin_id: str | None, method: str | None) -> Any:
    if not data:
        raise PluginResponseError(
            "empty response; a call must answer an envelope",
            plugin_id=plugin_id,
            method=method,
        )
    env = _loads(data, plugin_id, method)
    if isinstance(env, dict):
        flag = env["ok"] if "ok" in env else ci_get(env, "ok")
        if flag is True:
            return env["result"] if "result" in env else ci_get(env, "result", {})
        if flag is False:
            err = _error_from_body(ci_get(env, "error"), plugin_id, method)
            if err is not None:
                raise err
    raise PluginResponseError(
        'response is not an envelope: expected {"ok": true, "result": ...} or '
        '{"ok": false, "error": {"code": ..., "message": ...}}',
        plugin_id=plugin_id,
        method=method,
    )


def failed_call_error(rc: int, data: bytes, *, plugin_id: str | None, method: str) -> PluginError:
    """The error for a call that returned non-zero: its error envelope if it sent one."""
    if data:
        try:
            env = orjson.loads(data)
        except orjson.JSONDecodeError:
            env = None
        if isinstance(env, dict) and ci_get(env, "ok") is False:
            err = _error_from_body(ci_get(env, "error"), plugin_id, method)
            if err is not None:
                return err
    text = bytes(data).decode("utf-8", "replace") if data else "(no response)"
    return PluginCallFailed(
        f"plugin call {method} returned {rc}: {text}",
        plugin_id=plugin_id,
        method=method,
    )
