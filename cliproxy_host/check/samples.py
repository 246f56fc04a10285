"""What the suite sends a plugin: minimal valid requests and configs (docs/ABI.md, 3 and 6)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Final

from ruamel.yaml import YAML

from ..envelope import b64encode
from ..host.registry import ConfigField, Registration

UNKNOWN_METHOD: Final = "check.no_such_method"
# What the host sends a plugin that is switched on with no settings of its own.
BASE_CONFIG: Final = {"enabled": True, "priority": 0}

_EMPTY_BODY: Final = b64encode(b"{}")
_EXECUTOR: Final = {
    "Model": "check-model",
    "Format": "chat-completions",
    "Stream": False,
    "Headers": {},
    "Query": {},
    "Payload": _EMPTY_BODY,
    "Metadata": {},
}
_TRANSFORM: Final = {
    "FromFormat": "chat-completions",
    "ToFormat": "chat-completions",
    "Model": "check-model",
    "Stream": False,
    "Body": _EMPTY_BODY,
}
TRANSFORMS: Final = (
    "request.translate",
    "request.normalize",
    "request.intercept_before",
    "request.intercept_after",
    "response.translate",
    "response.normalize_before",
    "response.normalize_after",
    "response.intercept_after",
    "thinking.apply",
)
_REQUESTS: Final[dict[str, dict[str, Any]]] = {
    "executor.execute": _EXECUTOR,
    "executor.execute_stream": {**_EXECUTOR, "Stream": True},
    "executor.count_tokens": _EXECUTOR,
    "executor.http_request": {
        "Method": "GET",
        "URL": "https://check.invalid/",
        "Headers": {},
        "Body": "",
    },
    **dict.fromkeys(TRANSFORMS, _TRANSFORM),
    "response.intercept_stream_chunk": {**_TRANSFORM, "Stream": True},
    "model.route": {"Model": "check-model"},
    "scheduler.pick": {"Model": "check-model"},
    "usage.handle": {"Model": "check-model"},
    "request.complete": {"Model": "check-model"},
    "auth.parse": {"StorageJSON": _EMPTY_BODY},
    "frontend_auth.authenticate": {"Headers": {}, "Query": {}},
    "command_line.execute": {"Args": []},
    "management.handle": {"Method": "GET", "Path": "/", "Headers": {}, "Query": {}, "Body": ""},
}
# The fields of requests and results that carry bytes as base64.
BYTE_FIELDS: Final = ("Payload", "Body", "StorageJSON")


def request_for(method: str, plugin_id: str, registration: Registration | None) -> dict[str, Any]:
    """A minimal valid request for `method` (a fresh dict: callers may change it)."""
    if method == "management.register":
        metadata = registration.metadata.to_json() if registration else {}
        return {
            "Plugin": metadata,
            "BasePath": "/v0/management",
            "ResourceBasePath": f"/v0/resource/plugins/{plugin_id}",
        }
    return dict(_REQUESTS.get(method, {}))


def sample_value(config_field: ConfigField) -> Any:
    """A value of the declared type; URL-ish strings get a URL so that plugins using them
    reach host.http.do (answered locally) instead of refusing to work."""
    kind = config_field.type
    if kind == "enum":
        return config_field.enum_values[0] if config_field.enum_values else "check"
    if kind == "string":
        return "https://check.invalid/" if "url" in config_field.name.lower() else "check"
    return {"number": 1.5, "integer": 1, "boolean": True, "array": [], "object": {}}[kind]


def config_yaml(settings: Mapping[str, Any]) -> bytes:
    """The YAML bytes of a plugin's config section, as the host sends them."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(dict(settings), out)
    return out.getvalue().encode("utf-8")
