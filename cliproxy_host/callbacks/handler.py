"""HostCallbacks: the host.* methods a plugin may call, dispatched by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from ..config.schema import HostConfig, HttpPolicy, RemoteManagement
from ..envelope import ok
from ..errors import HostCallFailed, InvalidRequest, PluginError
from .auth import AuthStore
from .events import EventBus
from .http import HttpBridge
from .log import host_log
from .models import ModelCalls
from .permissions import Permissions
from .plugin_calls import PluginCalls
from .scopes import FIELD, ScopeTable
from .services import ServiceDirectory
from .streams import StreamTable

# (plugin ID, parsed request object) -> result object; raises PluginError to answer an error.
Callback = Callable[[str, Mapping[str, Any]], object]


class HostCallbacks:
    """The HostHandler the host gives every backend: answers an ok envelope or raises.

    Backends call it behind the answer gate (`gate.gated`), which turns what it raises
    into the error envelope the plugin is answered.
    """

    def __init__(
        self,
        policy: HttpPolicy,
        *,
        auth_dir: Path = Path("auths"),
        max_auth_bytes: int = RemoteManagement().max_body_bytes,
    ) -> None:
        self.http = HttpBridge(policy)
        self.streams = StreamTable()
        self.scopes = ScopeTable()
        # A credential file is capped like a management request body: the Go host takes
        # auth files through its management API.
        self.auth = AuthStore(auth_dir, max_auth_bytes)
        self.models = ModelCalls(self.scopes)
        self.permissions = Permissions()
        self.events = EventBus(self.permissions)
        self.plugin_calls = PluginCalls(self.scopes, self.permissions)
        self.services = ServiceDirectory()
        self._callbacks: dict[str, Callback] = {
            "host.log": self._log,
            "host.http.do": self.http.do,
            "host.http.do_stream": self._http_stream,
            "host.http.stream_read": self.http.stream_read,
            "host.http.stream_close": self.http.stream_close,
            "host.stream.emit": self.streams.emit,
            "host.stream.close": self.streams.close_stream,
            "host.auth.list": self.auth.list_files,
            "host.auth.get": self.auth.get,
            "host.auth.get_runtime": self.auth.get_runtime,
            "host.auth.save": self.auth.save,
            "host.model.execute": self.models.execute,
            "host.model.execute_stream": self.models.execute_stream,
            "host.model.stream_read": self.models.stream_read,
            "host.model.stream_close": self.models.stream_close,
            "host.event.publish": self.events.publish_cb,
            "host.event.subscribe": self.events.subscribe_cb,
            "host.event.unsubscribe": self.events.unsubscribe_cb,
            "host.plugin.call": self.plugin_calls.call,
            "host.dispatch": self.plugin_calls.dispatch,
            "host.service.lookup": self.services.lookup,
        }

    def __call__(self, plugin_id: str, method: str, request: bytes) -> bytes:
        # One function, no helpers: this runs for every host callback.
        callback = self._callbacks.get(method)
        if callback is None:
            raise HostCallFailed(f"unsupported host callback {method}")
        try:
            body = orjson.loads(request)
        except orjson.JSONDecodeError as exc:
            raise _invalid(f"{method}: the request is not JSON ({exc})") from None
        if type(body) is not dict:
            raise _invalid(f"{method}: the request must be a JSON object")
        self.permissions.check(plugin_id, method, body)
        return ok(callback(plugin_id, body))

    def _log(self, plugin_id: str, request: Mapping[str, Any]) -> object:
        # An echoed host_callback_id names the request the line belongs to.
        scope = self.scopes.get(request[FIELD]) if FIELD in request else None
        return host_log(plugin_id, request, scope)

    def _http_stream(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        answer = self.http.do_stream(plugin_id, request)
        scope = self.scopes.get(request.get(FIELD))
        if scope is not None:
            # Opened for a request: it ends with the request's scope if the plugin forgets it.
            close = {"stream_id": answer["stream_id"]}
            self.scopes.add_cleanup(
                scope.callback_id, lambda: self.http.stream_close(plugin_id, close)
            )
        return answer

    def configure(self, config: HostConfig) -> None:
        """A config applied (at start or on a hot reload): the http: policy, the auth dir,
        the credential size cap and the permissions hold from the next host call on."""
        self.http.configure(config.http)
        self.auth.configure(config.auth_dir_path(), config.remote_management.max_body_bytes)
        self.permissions.configure(config)

    def plugin_unloaded(self, plugin_id: str) -> None:
        """Release what the plugin still holds: its open HTTP streams and model runs."""
        self.http.close_plugin(plugin_id)
        self.models.plugin_unloaded(plugin_id)

    def close(self) -> None:
        """Close every open stream and the HTTP client (the host is shutting down)."""
        self.events.close()
        self.models.close()
        self.streams.shutdown()
        self.http.close()


def _invalid(message: str) -> PluginError:
    return InvalidRequest(message, retryable=False, http_status=400)
