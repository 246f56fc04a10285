"""host.stream.emit and host.stream.close: async executor streams, with back-pressure."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from ..envelope import b64decode, ci_get
from ..errors import HostCallFailed, InvalidRequest, PluginError, ResponseTooLarge

# Undelivered chunks a stream holds before emit blocks (the Go host's streamBridgeBufferSize).
STREAM_BUFFER: Final = 16


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One chunk of an executor stream; a non-empty `error` is the stream's last chunk."""

    payload: bytes
    error: str = ""


# StreamChunk's slots, set directly: the frozen dataclass's __init__ goes through
# object.__setattr__ per field, about three times the cost of this on every emit and
# every chunk of an answer.
_SET_PAYLOAD, _SET_ERROR = (StreamChunk.__dict__[name].__set__ for name in ("payload", "error"))
assert len(fields(StreamChunk)) == 2, "new_chunk sets every field of StreamChunk"


def new_chunk(payload: bytes, error: str = "") -> StreamChunk:
    """StreamChunk(payload, error), faster."""
    chunk: StreamChunk = object.__new__(StreamChunk)
    _SET_PAYLOAD(chunk, payload)
    _SET_ERROR(chunk, error)
    return chunk


class _End:
    __slots__ = ()


class _Empty:
    __slots__ = ()


# What ExecutorStream.poll answers besides a chunk: the stream is over / nothing yet.
END: Final = _End()
EMPTY: Final = _Empty()


def not_open(stream_id: str) -> HostCallFailed:
    """The Go host's answer to an emit on a stream that is unknown, closed or aborted."""
    return HostCallFailed(
        f"stream {stream_id} is not open; emit only between executor.execute_stream "
        "and host.stream.close, while the consumer reads"
    )


class ExecutorStream:
    """One async stream: the plugin's threads put chunks, one consumer takes them. Thread-safe.

    At most STREAM_BUFFER chunks wait; `put` blocks while the buffer is full until the
    consumer takes one, the plugin closes the stream or the consumer aborts it. After
    `close` the queued chunks are still delivered, then the end; after `abort` nothing is.
    """

    __slots__ = (
        "_aborted",
        "_closed",
        "_lock",
        "_max_bytes",
        "_queue",
        "_readable",
        "_received",
        "_timeout",
        "_waker",
        "_writable",
        "owner",
        "stream_id",
        "tag",
    )

    def __init__(
        self,
        stream_id: str,
        owner: str,
        max_bytes: int,
        tag: object = None,
        timeout: float | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.owner = owner
        # How long an emit waits for room: a plugin that emits more than the buffer from
        # the thread running execute_stream would otherwise wait for itself forever.
        self._timeout = timeout
        self.tag = tag  # what the caller opened it for (the host: the plugin's backend)
        self._max_bytes = max_bytes
        self._received = 0
        self._queue: deque[StreamChunk] = deque()
        self._lock = threading.Lock()
        # Two conditions on one lock: a chunk wakes only the consumer, a take only an
        # emitter. Made on first wait: most streams never wait, and a Condition costs.
        self._readable: threading.Condition | None = None
        self._writable: threading.Condition | None = None
        self._closed = False  # the plugin closed it (or broke the cap): no more emits
        self._aborted = False  # the consumer is gone: nothing more is delivered
        # An async consumer's wake-up (loop.call_soon_threadsafe); called under the lock.
        self._waker: Callable[[], None] | None = None

    def put(self, chunk: StreamChunk) -> None:
        """Queue a chunk, waiting while the buffer is full; HostCallFailed once not open."""
        with self._lock:
            while True:
                if self._closed or self._aborted:
                    raise not_open(self.stream_id)
                if len(self._queue) < STREAM_BUFFER:
                    break
                if self._writable is None:
                    self._writable = threading.Condition(self._lock)
                if not self._writable.wait(self._timeout):
                    raise HostCallFailed(
                        f"stream {self.stream_id}: the consumer took no chunk within "
                        f"{self._timeout:g} s while {STREAM_BUFFER} waited; emit from a thread "
                        "of your own after answering execute_stream, not before"
                    )
            self._received += len(chunk.payload)
            if self._received > self._max_bytes:
                error = ResponseTooLarge(
                    f"stream {self.stream_id} of plugin {self.owner} emitted more than "
                    f"{self._max_bytes} bytes (max_response_bytes); the stream was ended"
                )
                # Terminal for the consumer too: it gets the reason as the last chunk.
                self._queue.append(StreamChunk(b"", error.message))
                self._closed = True
                self._wake_all()
                raise error
            self._queue.append(chunk)
            if self._readable is not None:
                self._readable.notify()
            if self._waker is not None:
                self._waker()

    def close(self, error: str = "") -> None:
        """The plugin is done: queued chunks (and `error`, last) are delivered, then the end."""
        with self._lock:
            if self._closed or self._aborted:
                return
            self._closed = True
            if error:
                self._queue.append(StreamChunk(b"", error))
            self._wake_all()

    def abort(self, error: str = "") -> None:
        """The consumer is gone (or the host): drop what is queued, fail waiting emits.

        With `error`, a consumer still reading gets it as the last chunk.
        """
        with self._lock:
            if self._aborted:
                return
            self._aborted = True
            self._queue.clear()
            if error:
                self._queue.append(StreamChunk(b"", error))
            self._wake_all()

    def take(self, timeout: float | None) -> StreamChunk | _End | None:
        """The next chunk, END when the stream is over, None after `timeout` seconds."""
        with self._lock:
            if not self._queue and not (self._closed or self._aborted):
                if self._readable is None:
                    self._readable = threading.Condition(self._lock)
                self._readable.wait_for(self._ready, timeout)
            return self._next()

    def poll(self) -> StreamChunk | _End | _Empty:
        """The next chunk, END, or EMPTY when nothing has arrived yet (never waits)."""
        with self._lock:
            chunk = self._next()
            return EMPTY if chunk is None else chunk

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Have `waker()` called when a chunk or the end arrives (at once if one has)."""
        with self._lock:
            self._waker = waker
            if waker is not None and self._ready():
                waker()

    def _ready(self) -> bool:
        return bool(self._queue) or self._closed or self._aborted

    def _next(self) -> StreamChunk | _End | None:
        # The caller holds the lock.
        if self._queue:
            chunk = self._queue.popleft()
            if self._writable is not None:
                self._writable.notify()
            return chunk
        if self._closed or self._aborted:
            return END
        return None

    def _wake_all(self) -> None:
        if self._readable is not None:
            self._readable.notify_all()
        if self._writable is not None:
            self._writable.notify_all()
        if self._waker is not None:
            self._waker()


class StreamTable:
    """The host's open executor streams by ID; answers host.stream.emit and close.

    IDs are decimal strings from a per-host counter, as the Go host's. A stream belongs to
    the plugin whose execute_stream opened it: another plugin's emits find it not open.
    IDs are never reused, so each change of the table is one dict operation, atomic
    without a lock.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._streams: dict[str, ExecutorStream] = {}
        self._closed = False

    def open(
        self, owner: str, max_bytes: int, tag: object = None, timeout: float | None = None
    ) -> ExecutorStream:
        """A new stream for `owner`'s execute_stream call, capped at `max_bytes` in total.

        An emit waits at most `timeout` seconds for room in the buffer.
        """
        stream = ExecutorStream(str(next(self._ids)), owner, max_bytes, tag, timeout)
        self._streams[stream.stream_id] = stream
        if self._closed:  # after the insert: shutdown() either sees it or we see the flag
            self.forget(stream)
            raise HostCallFailed("the host is shutting down; no stream can be opened")
        return stream

    def forget(self, stream: ExecutorStream, error: str = "") -> None:
        """Take the stream out of the table and abort it (its consumer is done)."""
        self._streams.pop(stream.stream_id, None)
        stream.abort(error)

    def __len__(self) -> int:
        return len(self._streams)

    def emit(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.stream.emit `{"stream_id", "payload", "error"}` -> `{}` once queued."""
        stream_id = _stream_id(request)
        stream = self._streams.get(stream_id)  # one dict read: atomic, no lock needed
        if stream is None or stream.owner != plugin_id:
            raise not_open(stream_id)
        try:
            payload = b64decode(ci_get(request, "payload"), "payload")
        except ValueError as exc:
            raise _invalid(f"host.stream.emit: {exc}") from None
        error = ci_get(request, "error") or ""
        if not isinstance(error, str):
            raise _invalid("host.stream.emit: field 'error' must be a string")
        stream.put(new_chunk(payload, error))
        return {}

    def close_stream(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.stream.close `{"stream_id", "error"?}` -> `{}`, always (unknown IDs too)."""
        stream_id = ci_get(request, "stream_id")
        error = ci_get(request, "error") or ""
        if not isinstance(stream_id, str) or not isinstance(error, str):
            return {}
        stream = self._streams.get(stream_id)
        if stream is None or stream.owner != plugin_id:
            return {}
        self._streams.pop(stream_id, None)
        stream.close(error)
        return {}

    def close_plugin(self, plugin_id: str, tag: object = None) -> None:
        """Abort every stream of an unloaded plugin; its consumers get the reason.

        With `tag`, only the streams opened with it: a plugin swapped for a new version
        keeps the new version's streams.
        """
        owned = [
            s
            for s in list(self._streams.values())  # list(): one atomic copy
            if s.owner == plugin_id and (tag is None or s.tag is tag)
        ]
        for stream in owned:
            self._streams.pop(stream.stream_id, None)
            stream.abort(f"plugin {plugin_id} was unloaded while streaming")

    def open_per_plugin(self) -> dict[str, int]:
        """How many streams each plugin has open (for the metrics)."""
        counts: dict[str, int] = {}
        for stream in list(self._streams.values()):  # list(): one atomic copy
            counts[stream.owner] = counts.get(stream.owner, 0) + 1
        return counts

    def shutdown(self) -> None:
        """Abort every stream and open no more (the host is shutting down)."""
        self._closed = True
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream.abort("the host is shutting down")


def _stream_id(request: Mapping[str, Any]) -> str:
    value = ci_get(request, "stream_id")
    if not isinstance(value, str) or not value:
        raise _invalid(
            "host.stream.emit: field 'stream_id' is required: the stream_id of the "
            "executor.execute_stream request"
        )
    return value


def _invalid(message: str) -> PluginError:
    return InvalidRequest(message, retryable=False, http_status=400)
