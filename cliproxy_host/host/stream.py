"""PluginStream: the consumer's side of one executor.execute_stream call, sync or async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

from ..callbacks.streams import EMPTY, END, ExecutorStream, StreamChunk, new_chunk
from ..envelope import b64decode, ci_get
from ..errors import PluginResponseError, PluginTimeout

__all__ = ["PluginStream", "StreamChunk", "parse_answer"]


class PluginStream:
    """The chunks of one execute_stream call, in order; iterate it, or `async for` it.

    A chunk with a non-empty `error` is the last one. `close()` (idempotent; also on
    leaving a `with` block, and when iteration ends) aborts the stream: an emit the
    plugin has blocked returns, and later emits answer host_call_failed. Waiting for a
    chunk is bounded by `timeout` seconds each; past it the stream is closed and
    PluginTimeout raised. Iterate from one thread (or task) at a time.
    """

    def __init__(
        self,
        headers: dict[str, Any],
        *,
        chunks: Sequence[StreamChunk] = (),
        stream: ExecutorStream | None = None,
        timeout: float | None = None,
        finish: Callable[[], None] = lambda: None,
        plugin_id: str = "",
        method: str = "executor.execute_stream",
    ) -> None:
        self.headers = headers
        self._chunks = list(chunks)
        self._stream = stream
        self._timeout = timeout
        self._finish = finish
        self._plugin_id = plugin_id
        self._method = method
        self._done = False

    @property
    def stream_id(self) -> str:
        """The stream_id the plugin was given ("" for an answer that held its chunks)."""
        return self._stream.stream_id if self._stream is not None else ""

    def close(self) -> None:
        """Stop reading: abort the stream and end its scope. Idempotent."""
        # No lock: `finish` is idempotent itself, so two racing closes are harmless.
        if self._done:
            return
        self._done = True
        self._chunks.clear()
        self._finish()

    def __enter__(self) -> PluginStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[StreamChunk]:
        return self

    def __next__(self) -> StreamChunk:
        if self._done:
            raise StopIteration
        if self._stream is None:
            return self._deliver(self._chunks.pop(0) if self._chunks else END)
        item = self._stream.take(self._timeout)
        if item is None:
            raise self._timed_out()
        return self._deliver(item)

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._done:
            raise StopAsyncIteration
        stream = self._stream
        if stream is None:
            return self._adeliver(self._chunks.pop(0) if self._chunks else END)
        item = stream.poll()
        if item is EMPTY:
            # Wait on the loop, not on a thread: the emitting thread wakes this task
            # through call_soon_threadsafe.
            loop = asyncio.get_running_loop()
            ready = loop.create_future()

            def wake() -> None:
                loop.call_soon_threadsafe(_resolve, ready)

            stream.set_waker(wake)
            try:
                deadline = None if self._timeout is None else time.monotonic() + self._timeout
                while (item := stream.poll()) is EMPTY:
                    left = None if deadline is None else deadline - time.monotonic()
                    try:
                        await asyncio.wait_for(ready, left)
                    except TimeoutError:
                        raise self._timed_out() from None
                    ready = loop.create_future()
                    stream.set_waker(wake)
            finally:
                stream.set_waker(None)
        return self._adeliver(item)

    def _deliver(self, item: object) -> StreamChunk:
        if not isinstance(item, StreamChunk):
            self.close()
            raise StopIteration
        if item.error:
            self.close()  # terminal: the consumer stops here, so the plugin may too
        return item

    def _adeliver(self, item: object) -> StreamChunk:
        try:
            return self._deliver(item)
        except StopIteration:
            raise StopAsyncIteration from None

    def _timed_out(self) -> PluginTimeout:
        self.close()
        return PluginTimeout(
            f"plugin {self._plugin_id} sent no chunk on stream {self.stream_id} within "
            f"{self._timeout:g} s (timeout_ms); the stream was closed",
            plugin_id=self._plugin_id,
            method=self._method,
        )

    def __repr__(self) -> str:
        return f"PluginStream({self._plugin_id!r}, stream_id={self.stream_id!r})"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# A chunk without a Payload key (a sentinel: None is a valid, empty Payload).
_MISSING: Any = object()


def parse_answer(
    result: Any, plugin_id: str, method: str
) -> tuple[dict[str, Any], list[StreamChunk]]:
    """The headers and the chunks of an execute_stream answer `{"headers", "chunks"}`."""
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise _bad(plugin_id, method, "the result must be an object with headers and chunks")
    headers = ci_get(result, "headers") or {}
    raw_chunks = ci_get(result, "chunks") or []
    if not isinstance(headers, dict) or not isinstance(raw_chunks, list):
        raise _bad(plugin_id, method, "'headers' must be an object and 'chunks' a list")
    chunks = []
    for n, raw in enumerate(raw_chunks):
        if not isinstance(raw, dict):
            raise _bad(plugin_id, method, f"chunks[{n}] must be an object with a Payload")
        encoded: Any = raw.get("Payload", _MISSING)
        error: Any = ""
        if encoded is _MISSING or len(raw) != 1:
            # Not the Go struct's one field: one pass over the keys, case-insensitively
            # as Go reads them.
            encoded = None
            for key, value in raw.items():
                folded = key.casefold() if isinstance(key, str) else key
                if folded == "payload":
                    encoded = value
                elif folded in ("error", "err") and value:
                    error = value
        try:
            payload = b64decode(encoded, "Payload")
        except ValueError as exc:  # the chunk's index only now: an f-string per chunk costs
            raise _bad(plugin_id, method, f"chunks[{n}]: {exc}") from None
        chunks.append(new_chunk(payload, error if isinstance(error, str) else str(error)))
    return dict(headers), chunks


def _bad(plugin_id: str, method: str, problem: str) -> PluginResponseError:
    return PluginResponseError(
        f"plugin {plugin_id} answered {method} wrongly: {problem}",
        plugin_id=plugin_id,
        method=method,
    )
