"""The bench's plugin program (docs/PROTOCOL.md): `echo` answers the request back, via the SDK."""

from __future__ import annotations

from typing import Any

from cliproxy_host.sdk import Plugin, Request

plugin = Plugin(
    "bench-program",
    version="1.0.0",
    capabilities={
        "executor": True,
        "executor_input_formats": ["openai"],
        "executor_output_formats": ["openai"],
    },
)


@plugin.method("echo")
def echo(request: Request) -> dict[str, Any]:
    return request.params


if __name__ == "__main__":
    plugin.run()
