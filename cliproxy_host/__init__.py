"""cliproxy-host: a Python host for native plugins speaking the CLIProxyAPI plugin ABI."""

from .abi import ABI_VERSION, SCHEMA_VERSION
from .config import ConfigError, HostConfig
from .envelope import PluginError, PluginLoadError, PluginResponseError
from .host import NOT_HANDLED, BroadcastResult, PluginHost, PluginInfo

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
]
