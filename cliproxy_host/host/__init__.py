"""The host: plugins brought in line with the config, and work dispatched to them."""

from .facade import NOT_HANDLED, BroadcastResult, PluginHost, PluginInfo
from .stream import PluginStream, StreamChunk

__all__ = [
    "NOT_HANDLED",
    "BroadcastResult",
    "PluginHost",
    "PluginInfo",
    "PluginStream",
    "StreamChunk",
]
