"""Host callbacks: the host.* methods a plugin may call, behind one answer gate (`gate`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .handler import Callback, HostCallbacks
    from .http import HttpBridge
    from .log import host_log

__all__ = ["Callback", "HostCallbacks", "HttpBridge", "host_log"]

# Imported on first use: the backends import the gate, and an isolated worker process
# (which loads a backend) must not pay for the HTTP client and the config parser.
_EXPORTS = {
    "Callback": ".handler",
    "HostCallbacks": ".handler",
    "HttpBridge": ".http",
    "host_log": ".log",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
