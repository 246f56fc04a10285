"""An executor plugin program: answers executor.execute with the request's payload, upper-cased.

Run it from the host (plugins.configs.<id>.command: ["python3", "examples/python/echo_plugin.py"])
or check it: cliproxy-host check --command "python3 examples/python/echo_plugin.py".
"""

from __future__ import annotations

import json
from typing import Any

from cliproxy_host.sdk import Plugin, PluginFailure, Request, b64

plugin = Plugin(
    "echo-python",
    version="1.0.0",
    author="cliproxy-host",
    repository="https://example.invalid/echo-python",
    capabilities={
        "executor": True,
        "executor_input_formats": ["openai"],
        "executor_output_formats": ["openai"],
    },
    config_fields=[{"Name": "prefix", "Type": "string", "Description": "prepended to answers"}],
)
settings: dict[str, str] = {"prefix": ""}


@plugin.on_config
def configure(request: Request) -> None:
    # A flat `key: value` reading is enough for this plugin's one string setting.
    for line in request.config_yaml.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "prefix":
            settings["prefix"] = value.strip().strip("\"'")


@plugin.method("executor.identifier")
def identifier(request: Request) -> dict[str, Any]:
    return {"identifier": plugin.plugin_id}


@plugin.method("executor.execute")
def execute(request: Request) -> dict[str, Any]:
    body = request.json_field("Payload")
    if not isinstance(body, dict):
        raise PluginFailure("invalid_request", "Payload must be a base64 JSON object")
    if body.get("log"):
        plugin.host.log("echoing", level="info", model=request.model or "")
    text = settings["prefix"] + str(body.get("text", "")).upper()
    return {"Payload": b64(json.dumps({"text": text})), "Headers": {}}


if __name__ == "__main__":
    plugin.run()
