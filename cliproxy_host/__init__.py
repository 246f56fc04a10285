"""cliproxy-host: a Python host for native plugins speaking the CLIProxyAPI plugin ABI."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .abi import ABI_VERSION, SCHEMA_VERSION
    from .config import ConfigError, HostConfig
    from .envelope import PluginError, PluginLoadError, PluginResponseError
    from .host import NOT_HANDLED, BroadcastResult, PluginHost, PluginInfo

try:
    __version__ = version("cliproxy-host")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"

# The public names, imported on first use: an isolated worker process imports only the
# loader, and must not pay for the host, its HTTP client and the config parser on every
# (re)start.
_EXPORTS = {
    "ABI_VERSION": ".abi",
    "SCHEMA_VERSION": ".abi",
    "ConfigError": ".config",
    "HostConfig": ".config",
    "PluginError": ".envelope",
    "PluginLoadError": ".envelope",
    "PluginResponseError": ".envelope",
    "NOT_HANDLED": ".host",
    "BroadcastResult": ".host",
    "PluginHost": ".host",
    "PluginInfo": ".host",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ABI_VERSION",
    "NOT_HANDLED",
    "SCHEMA_VERSION",
    "BroadcastResult",
    "ConfigError",
    "HostConfig",
    "PluginError",
    "PluginHost",
    "PluginInfo",
    "PluginLoadError",
    "PluginResponseError",
    "__version__",
]
