"""Host callbacks: the host.* methods a plugin may call, dispatched by name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ..config import HttpPolicy
from ..envelope import ok
from ..errors import HostCallFailed, InvalidRequest, PluginError
from .http import HttpBridge
from .log import host_log

__all__ = ["Callback", "HostCallbacks", "HttpBridge", "host_log"]

log = logging.getLogger(__name__)

# (plugin ID, parsed request object) -> result object; raises PluginError to answer an error.
Callback = Callable[[str, Mapping[str, Any]], object]


class HostCallbacks:
    """The HostHandler the loader calls for every host->call: answers an envelope, never raises."""

    def __init__(self, policy: HttpPolicy) -> None:
        self.http = HttpBridge(policy)
        self._callbacks: dict[str, Callback] = {
            "host.log": host_log,
            "host.http.do": self.http.do,
            "host.http.do_stream": self.http.do_stream,
            "host.http.stream_read": self.http.stream_read,
            "host.http.stream_close": self.http.stream_close,
        }

    def __call__(self, plugin_id: str, method: str, request: bytes) -> bytes:
        try:
            # _dispatch, inlined: this runs for every host callback.
            callback = self._callbacks.get(method)
            if callback is None:
                return HostCallFailed(f"unsupported host callback {method}").to_envelope()
            try:
                body = orjson.loads(request)
            except orjson.JSONDecodeError as exc:
                raise _invalid(f"{method}: the request is not JSON ({exc})") from None
            if type(body) is not dict:
                raise _invalid(f"{method}: the request must be a JSON object")
            return ok(callback(plugin_id, body))
        except PluginError as exc:
            return exc.to_envelope()
        except Exception as exc:
            log.exception("plugin %s: host callback %s failed", plugin_id, method)
            return HostCallFailed(f"host callback {method} failed: {exc}").to_envelope()

    def plugin_unloaded(self, plugin_id: str) -> None:
        """Release what the plugin still holds: its open HTTP streams."""
        self.http.close_plugin(plugin_id)

    def close(self) -> None:
        """Close every open stream and the HTTP client (the host is shutting down)."""
        self.http.close()


def _invalid(message: str) -> PluginError:
    return InvalidRequest(message, retryable=False, http_status=400)
