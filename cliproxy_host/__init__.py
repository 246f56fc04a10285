"""cliproxy-host: a Python host for native plugins speaking the CLIProxyAPI plugin ABI."""

from importlib.metadata import PackageNotFoundError, version

from .abi import ABI_VERSION, SCHEMA_VERSION
from .config import ConfigError, HostConfig
from .envelope import PluginError, PluginLoadError, PluginResponseError
from .host import NOT_HANDLED, BroadcastResult, PluginHost, PluginInfo

try:
    __version__ = version("cliproxy-host")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"

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
