"""host.model.*: a plugin runs a model request through the host's pipeline (ModelCalls)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Protocol

from ..envelope import b64encode
from ..errors import (
    HostCallFailed,
    InvalidRequest,
    ModelCallTooDeep,
    PluginError,
    PluginTimeout,
)
from ..pipeline import ModelChunk, ModelRequest, ModelResponse
from ..pipeline.models import headers_json
from .scopes import FIELD, MODEL_CHAIN, ScopeTable

log = logging.getLogger(__name__)

DEPTH_KEY: Final = "plugins.model-call-depth"
DEFAULT_DEPTH: Final = 8
# Chunks a streamed run may get ahead of the plugin reading it (as host.stream.emit's 16).
QUEUED_CHUNKS: Final = 16
# How often a producer blocked on a full queue looks whether its stream was closed.
_CANCEL_POLL_S: Final = 0.05
_DONE: Final = {"payload": "", "error": "", "done": True}


class ModelRunner(Protocol):
    """The pipeline as host.model.* needs it (pipeline.Pipeline is one)."""

    def execute(self, request: ModelRequest) -> ModelResponse: ...

    def execute_stream(self, request: ModelRequest) -> Iterator[ModelChunk]: ...


class _End:
    """The item after a stream's last chunk."""


_END: Final = _End()
_Item = bytes | PluginError | _End


class _ModelStream:
    """One streamed run: a thread runs the pipeline and queues its chunks for stream_read."""

    __slots__ = ("_pending_lock", "canceled", "chunks", "model", "owner", "pending", "stream_id")

    def __init__(self, stream_id: str, owner: str, model: str) -> None:
        self.stream_id = stream_id
        self.owner = owner
        self.model = model
        self.chunks: queue.Queue[_Item] = queue.Queue(QUEUED_CHUNKS)
        self.canceled = threading.Event()
        # The first item, taken by execute_stream before it answers; the first read gets it.
        self.pending: _Item | None = None
        self._pending_lock = threading.Lock()

    def produce(self, chunks: Iterator[ModelChunk], chain: tuple[str, ...]) -> None:
        # The nested run's own host.model.* calls count from this chain.
        MODEL_CHAIN.set(chain)
        try:
            for chunk in chunks:
                if not self._put(chunk.payload):
                    return
            self._put(_END)
        except PluginError as exc:
            self._put(exc)
        except Exception as exc:  # a bug must end the stream, not leave the reader waiting
            log.exception("host.model.execute_stream: the run of model %s failed", self.model)
            self._put(HostCallFailed(f"the run of model {self.model} failed: {exc}"))
        finally:
            # Closing the run closes the executor's stream and reports it canceled.
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _put(self, item: _Item) -> bool:
        while not self.canceled.is_set():
            try:
                self.chunks.put(item, timeout=_CANCEL_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def take(self, timeout: float) -> _Item:
        with self._pending_lock:  # two reads at once must not both get the first item
            item, self.pending = self.pending, None
        if item is not None:
            return item
        return self.chunks.get(timeout=timeout)

    def cancel(self) -> None:
        self.canceled.set()


class ModelCalls:
    """host.model.execute, execute_stream, stream_read and stream_close. Thread-safe.

    The host attaches its pipeline once it has built it (`attach`); until then every
    call answers host_call_failed. Each run has the calling plugin as its caller, so its
    own router and interceptors are skipped (pipeline/run.py).
    """

    def __init__(self, scopes: ScopeTable) -> None:
        self._scopes = scopes
        self._runner: ModelRunner | None = None
        self._timeout: Callable[[str], float] = lambda _plugin_id: 30.0
        self._depth: Callable[[], int] = lambda: DEFAULT_DEPTH
        self._ids = itertools.count(1)
        self._streams: dict[str, _ModelStream] = {}
        self._lock = threading.Lock()

    def attach(
        self,
        runner: ModelRunner,
        *,
        timeout: Callable[[str], float],
        depth: Callable[[], int],
    ) -> None:
        """Run requests on `runner`; `timeout(plugin)` is the plugin's call timeout in
        seconds, `depth()` the nesting limit (both read at each call: a config apply
        changes them)."""
        self._runner, self._timeout, self._depth = runner, timeout, depth

    def _wait_limit(self, plugin_id: str) -> float:
        # Half the caller's own call timeout, so that a plugin whose read gives up still
        # answers within its call (as host.stream.emit waits for room).
        return self._timeout(plugin_id) / 2

    # -- the callbacks ---------------------------------------------------------------

    def execute(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        method = "host.model.execute"
        runner, req, chain = self._prepare(plugin_id, method, request, stream=False)
        token = MODEL_CHAIN.set(chain)
        try:
            resp = runner.execute(req)
        finally:
            MODEL_CHAIN.reset(token)
        return {
            "status_code": resp.status_code,
            "headers": headers_json(resp.headers),
            "body": b64encode(resp.body),
        }

    def execute_stream(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        method = "host.model.execute_stream"
        runner, req, chain = self._prepare(plugin_id, method, request, stream=True)
        stream = _ModelStream(str(next(self._ids)), plugin_id, req.model)
        with self._lock:
            self._streams[stream.stream_id] = stream
        threading.Thread(
            target=stream.produce,
            args=(runner.execute_stream(req), chain),
            name=f"host.model stream {stream.stream_id} of {plugin_id}",
            daemon=True,
        ).start()
        # The run starts (routing, the executor's call) before the answer, so that a
        # request no executor serves fails here, as the Go host's does.
        timeout = self._wait_limit(plugin_id)
        try:
            first = stream.take(timeout)
        except queue.Empty:
            self._close(stream.stream_id)
            raise self._timed_out(method, stream, timeout) from None
        if isinstance(first, PluginError):
            self._close(stream.stream_id)
            raise first
        stream.pending = first
        callback_id = request.get(FIELD)
        if isinstance(callback_id, str) and self._scopes.get(callback_id) is not None:
            # The run lives as long as the request the plugin is serving, unless closed first.
            self._scopes.add_cleanup(callback_id, lambda: self._close(stream.stream_id))
        return {"status_code": 200, "headers": {}, "stream_id": stream.stream_id}

    def stream_read(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        stream = self._owned(plugin_id, request)
        if stream is None:
            return dict(_DONE)
        timeout = self._wait_limit(plugin_id)
        try:
            item = stream.take(timeout)
        except queue.Empty:
            self._close(stream.stream_id)
            raise self._timed_out("host.model.stream_read", stream, timeout) from None
        if isinstance(item, bytes):
            return {"payload": b64encode(item), "error": "", "done": False}
        self._close(stream.stream_id)
        if isinstance(item, PluginError):
            return {"payload": "", "error": item.message, "done": True}
        return dict(_DONE)

    def stream_close(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        stream = self._owned(plugin_id, request)
        if stream is not None:
            self._close(stream.stream_id)
        return {}

    # -- the host's side ---------------------------------------------------------------

    def plugin_unloaded(self, plugin_id: str) -> None:
        """Close the streamed runs the plugin opened and has not closed."""
        with self._lock:
            owned = [s for s in self._streams.values() if s.owner == plugin_id]
        for stream in owned:
            self._close(stream.stream_id)

    def close(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for stream_id in streams:
            self._close(stream_id)

    def __len__(self) -> int:
        """The streamed runs open now."""
        return len(self._streams)

    # -- helpers -----------------------------------------------------------------------

    def _prepare(
        self, plugin_id: str, method: str, request: Mapping[str, Any], *, stream: bool
    ) -> tuple[ModelRunner, ModelRequest, tuple[str, ...]]:
        flag = request.get("stream", False)
        if not isinstance(flag, bool) or flag is not stream:
            raise _invalid(f'{method} requires "stream": {str(stream).lower()}, got {flag!r}')
        try:
            req = ModelRequest.of(request)
        except InvalidRequest as exc:
            raise _invalid(f"{method}: {exc.message}") from None
        except ValueError as exc:
            raise _invalid(f"{method}: {exc}") from None
        runner = self._runner
        if runner is None:
            raise HostCallFailed(f"{method}: this host runs no model pipeline")
        chain = (*self._parent_chain(request), plugin_id)
        limit = self._depth()
        if len(chain) > limit:
            raise ModelCallTooDeep(
                f"{method}: host.model calls nested {len(chain)} deep, over {DEPTH_KEY} "
                f"({limit}): {' -> '.join(chain)} -> {req.model}; raise {DEPTH_KEY} in the "
                "config if this depth is meant, else stop the plugin calling its own model",
                plugin_id=plugin_id,
                method=method,
            )
        return runner, dataclasses.replace(req, caller=plugin_id), chain

    def _parent_chain(self, request: Mapping[str, Any]) -> tuple[str, ...]:
        # The echoed host_callback_id names the request being served, from any thread;
        # without it, the calls this thread is running (in-process: the same thread).
        scope = self._scopes.get(request.get(FIELD))
        return scope.chain if scope is not None else MODEL_CHAIN.get()

    def _owned(self, plugin_id: str, request: Mapping[str, Any]) -> _ModelStream | None:
        # Another plugin's stream ID is as unknown to this one as a made-up one.
        stream = self._streams.get(str(request.get("stream_id", "")))
        return stream if stream is not None and stream.owner == plugin_id else None

    def _close(self, stream_id: str) -> None:
        with self._lock:
            stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.cancel()

    @staticmethod
    def _timed_out(method: str, stream: _ModelStream, timeout: float) -> PluginTimeout:
        return PluginTimeout(
            f"{method}: no chunk of model {stream.model} within {timeout:g} s (half the "
            f"timeout-ms of plugin {stream.owner}); the stream is closed",
            plugin_id=stream.owner,
            method=method,
        )


def _invalid(message: str) -> PluginError:
    return InvalidRequest(message, retryable=False, http_status=400)
