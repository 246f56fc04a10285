"""Typed helpers over a request envelope: case-insensitive keys, base64 fields, common fields."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any


def b64(data: bytes | str) -> str:
    """Standard base64 of bytes (a str is encoded as UTF-8 first), as the ABI's fields want."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> bytes:
    """The bytes of a base64 field; None and "" are empty."""
    return base64.b64decode(text, validate=True) if text else b""


class Request:
    """One call's request envelope. Keys are read like the host reads them: the exact
    spelling first, then case-insensitively (`Payload` finds `payload`)."""

    def __init__(self, method: str, params: Mapping[str, Any]) -> None:
        self.method = method
        self.params = dict(params)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.params:
            return self.params[key]
        folded = key.casefold()
        for name, value in self.params.items():
            if name.casefold() == folded:
                return value
        return default

    def bytes_field(self, key: str) -> bytes:
        """A base64 field (`Payload`, `Body`, `config_yaml`) decoded."""
        return unb64(self.get(key))

    def json_field(self, key: str) -> Any:
        """A base64 field holding JSON (an executor's `Payload`), parsed; None when empty."""
        raw = self.bytes_field(key)
        return json.loads(raw) if raw else None

    @property
    def payload(self) -> bytes:
        return self.bytes_field("Payload")

    @property
    def model(self) -> str | None:
        value = self.get("Model")
        return value if isinstance(value, str) else None

    @property
    def config_yaml(self) -> str:
        """plugin.register / plugin.reconfigure: the plugin's YAML entry as text."""
        return self.bytes_field("config_yaml").decode("utf-8")

    @property
    def host_callback_id(self) -> Any:
        """The id to echo in host calls made for this request (ABI.md 4.2), if any."""
        return self.get("host_callback_id")

    @property
    def stream_id(self) -> str | None:
        value = self.get("stream_id")
        return None if value is None else str(value)

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.params!r})"
