"""The host callbacks (ABI.md section 4) as functions: host.log, host.http.*, host.stream.*, ..."""

from __future__ import annotations

from typing import Any

from .connection import Connection
from .request import b64


class HostError(Exception):
    """The host answered a host call with an error envelope."""

    def __init__(self, method: str, code: str, message: str) -> None:
        super().__init__(f"{method}: {code}: {message}")
        self.method = method
        self.code = code
        self.message = message


class Host:
    """What a plugin may ask of the host. Every method blocks until the host answers, and
    may be called from any thread, while a call of the plugin is running or not."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Any host.* method: its `result`, or HostError with the host's error."""
        answer = self._connection.request(method, params or {})
        error = answer.get("error")
        if error is not None:  # a protocol error: the host has no such method
            raise HostError(method, str(error.get("code")), str(error.get("message")))
        envelope = answer.get("result") or {}
        if not envelope.get("ok"):
            failure = envelope.get("error") or {}
            raise HostError(method, str(failure.get("code")), str(failure.get("message")))
        result = envelope.get("result")
        return result if isinstance(result, dict) else {}

    def log(
        self, message: str, level: str = "info", *, host_callback_id: Any = None, **fields: Any
    ) -> None:
        params = {"level": level, "message": message, "fields": fields}
        self.call("host.log", _scoped(params, host_callback_id))

    def http_do(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, list[str]] | None = None,
        body: bytes = b"",
        host_callback_id: Any = None,
    ) -> dict[str, Any]:
        """{"StatusCode", "Headers", "Body" (base64)} under the host's http: policy; pass
        the call's `request.host_callback_id` so the host ties it to that call."""
        params = {"method": method, "url": url, "headers": headers or {}, "body": b64(body)}
        return self.call("host.http.do", _scoped(params, host_callback_id))

    def http_do_stream(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, list[str]] | None = None,
        body: bytes = b"",
        host_callback_id: Any = None,
    ) -> dict[str, Any]:
        params = {"method": method, "url": url, "headers": headers or {}, "body": b64(body)}
        return self.call("host.http.do_stream", _scoped(params, host_callback_id))

    def http_stream_read(self, stream_id: str) -> dict[str, Any]:
        return self.call("host.http.stream_read", {"stream_id": stream_id})

    def http_stream_close(self, stream_id: str) -> None:
        self.call("host.http.stream_close", {"stream_id": stream_id})

    def stream_emit(self, stream_id: str, payload: bytes, error: str | None = None) -> None:
        """One chunk of an async executor stream (ABI.md 4.1)."""
        params: dict[str, Any] = {"stream_id": stream_id, "payload": b64(payload)}
        if error is not None:
            params["error"] = error
        self.call("host.stream.emit", params)

    def stream_close(self, stream_id: str, error: str | None = None) -> None:
        params: dict[str, Any] = {"stream_id": stream_id}
        if error is not None:
            params["error"] = error
        self.call("host.stream.close", params)

    def auth_list(self) -> dict[str, Any]:
        return self.call("host.auth.list")

    def auth_get(self, auth_index: str) -> dict[str, Any]:
        return self.call("host.auth.get", {"auth_index": auth_index})

    def auth_get_runtime(self, auth_index: str) -> dict[str, Any]:
        return self.call("host.auth.get_runtime", {"auth_index": auth_index})

    def auth_save(self, name: str, json_text: str) -> dict[str, Any]:
        return self.call("host.auth.save", {"name": name, "json": json_text})

    def model_execute(self, **request: Any) -> dict[str, Any]:
        """host.model.execute with the fields of ABI.md 4.3 (model, body, ...)."""
        return self.call("host.model.execute", {**request, "stream": False})

    def model_execute_stream(self, **request: Any) -> dict[str, Any]:
        return self.call("host.model.execute_stream", {**request, "stream": True})

    def model_stream_read(self, stream_id: str) -> dict[str, Any]:
        return self.call("host.model.stream_read", {"stream_id": stream_id})

    def model_stream_close(self, stream_id: str) -> None:
        self.call("host.model.stream_close", {"stream_id": stream_id})


def _scoped(params: dict[str, Any], host_callback_id: Any) -> dict[str, Any]:
    """The request with the call's host_callback_id echoed (ABI.md 4.2), when it has one."""
    if host_callback_id is not None:
        params["host_callback_id"] = host_callback_id
    return params
