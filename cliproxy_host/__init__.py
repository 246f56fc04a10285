"""cliproxy-host: a Python host for native plugins speaking the CLIProxyAPI plugin ABI."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AbiVersionMismatch,
    ConfigError,
    ConfigSaveFailed,
    HostCallFailed,
    HostNotAllowed,
    InvalidConfig,
    InvalidPluginId,
    InvalidRegistration,
    InvalidRequest,
    NativeHandlerFailed,
    NoHandler,
    PluginBusy,
    PluginCallFailed,
    PluginCrashed,
    PluginError,
    PluginInitFailed,
    PluginLoadError,
    PluginNotAllowed,
    PluginNotFound,
    PluginNotLoaded,
    PluginResponseError,
    PluginTimeout,
    PluginUnavailable,
    PluginUnloading,
    RegistrationTimeout,
    ResponseTooLarge,
    UnknownAuth,
    UnknownStream,
    UpstreamError,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from .abi import ABI_VERSION, SCHEMA_VERSION
    from .config import HostConfig
    from .host import (
        NOT_HANDLED,
        BroadcastResult,
        PluginHost,
        PluginInfo,
        PluginStream,
        StreamChunk,
    )

# The rest of the public names, imported on first use: an isolated worker process imports
# only the loader, and must not pay for the host, its HTTP client and the config parser on
# every (re)start. The error tree is small and imported at once.
_EXPORTS = {
    "ABI_VERSION": ".abi",
    "SCHEMA_VERSION": ".abi",
    "HostConfig": ".config",
    "NOT_HANDLED": ".host",
    "BroadcastResult": ".host",
    "PluginHost": ".host",
    "PluginInfo": ".host",
    "PluginStream": ".host",
    "StreamChunk": ".host",
}


def _version() -> str:
    # importlib.metadata alone costs a worker process a third of its start-up: on first use.
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("cliproxy-host")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = value = _version()
        return value
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
    "AbiVersionMismatch",
    "BroadcastResult",
    "ConfigError",
    "ConfigSaveFailed",
    "HostCallFailed",
    "HostConfig",
    "HostNotAllowed",
    "InvalidConfig",
    "InvalidPluginId",
    "InvalidRegistration",
    "InvalidRequest",
    "NativeHandlerFailed",
    "NoHandler",
    "PluginBusy",
    "PluginCallFailed",
    "PluginCrashed",
    "PluginError",
    "PluginHost",
    "PluginInfo",
    "PluginInitFailed",
    "PluginLoadError",
    "PluginNotAllowed",
    "PluginNotFound",
    "PluginNotLoaded",
    "PluginResponseError",
    "PluginStream",
    "PluginTimeout",
    "PluginUnavailable",
    "PluginUnloading",
    "RegistrationTimeout",
    "ResponseTooLarge",
    "StreamChunk",
    "UnknownAuth",
    "UnknownStream",
    "UpstreamError",
    "UpstreamTimeout",
    "__version__",
]
