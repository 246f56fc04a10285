"""check's side of async executor streams: it opens them, drains them, and judges the emits.

Every `executor.execute_stream` of a run gets a `stream_id` in a real `StreamTable` (16
chunks of back-pressure, "stream <id> is not open" after close), as from the real host.
An answer without chunks leaves the stream to the plugin: one drain thread reads every
such stream until the plugin closes it, or leaves it idle too long: no chunk of its own
and no host.stream.* call of the plugin at all for `limits.STREAM_CLOSE_TIMEOUT` (a
plugin still emitting on other streams is working through a backlog, which a loaded
machine or an isolated plugin's host calls make long), or open `limits.STREAM_OPEN_MAX`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..callbacks.streams import ExecutorStream, StreamChunk, StreamTable, not_open
from ..envelope import b64decode, ci_get
from ..errors import InvalidRequest
from . import limits

# What each finding tells the author to do.
NEVER_CLOSED_FIX: Final = (
    'call host.stream.close {"stream_id": "<id>"} after the last host.stream.emit (with '
    '"error" to end on an error); a stream left open holds its request until it times out'
)
AFTER_CLOSE_FIX: Final = (
    "emit nothing after host.stream.close: close from the last emitting thread, after its last emit"
)
BASE64_FIX: Final = 'send "payload" as standard base64 (RFC 4648, padded) of the chunk\'s bytes'
UNKNOWN_ID_FIX: Final = (
    'emit with the "stream_id" of the executor.execute_stream request, as it came (a '
    "decimal string); ids are never made up by the plugin"
)
# Far above any chunk a check provokes; the cap itself is the real host's business.
_MAX_STREAM_BYTES: Final = 1 << 30


@dataclass
class Finding:
    """One way the plugin used host.stream.* wrongly (its first case), how often, the fix."""

    problem: str
    fix: str
    count: int = 1

    def describe(self) -> str:
        return self.problem if self.count == 1 else f"{self.problem} (and {self.count - 1} more)"


class _Watched:
    __slots__ = ("chunks", "deadline", "opened", "stream")

    def __init__(self, stream: ExecutorStream) -> None:
        self.stream = stream
        self.opened = time.monotonic()
        self.deadline = self.opened + limits.STREAM_CLOSE_TIMEOUT
        self.chunks = 0


class StreamWatch:
    """The run's execute_stream streams: opened per call, drained, their misuse recorded."""

    def __init__(self) -> None:
        self.table = StreamTable()
        self._lock = threading.Lock()
        self._issued: set[str] = set()
        self._closed_by_plugin: set[str] = set()
        self._watched: dict[str, _Watched] = {}
        self._drainer: threading.Thread | None = None
        self._wake = threading.Event()
        # When the plugin last made a host.stream.* call (any stream): progress.
        self._active = time.monotonic()
        self.findings: list[Finding] = []
        # Async streams seen, those the plugin closed, the chunks read from them, the
        # longest time one stayed open.
        self.async_streams = 0
        self.closed = 0
        self.chunks = 0
        self.longest = 0.0

    def _note(self, problem: str, fix: str) -> None:
        # One finding per kind of mistake (its fix): the first case, then a count.
        with self._lock:
            for finding in self.findings:
                if finding.fix == fix:
                    finding.count += 1
                    return
            self.findings.append(Finding(problem, fix))

    def open(self, plugin_id: str) -> ExecutorStream:
        """A stream for one execute_stream call of `plugin_id`."""
        stream = self.table.open(plugin_id, _MAX_STREAM_BYTES, timeout=limits.CALL_TIMEOUT / 2)
        with self._lock:
            self._issued.add(stream.stream_id)
        return stream

    def answered(self, stream: ExecutorStream, result: Any) -> None:
        """The call returned `result` (None when not ok): chunks in it are the whole stream,
        none leave the stream to the plugin's emits."""
        chunks = ci_get(result, "chunks") if isinstance(result, Mapping) else None
        if result is None or (isinstance(chunks, list) and chunks):
            self.table.forget(stream)
            return
        watched = _Watched(stream)
        with self._lock:
            self.async_streams += 1
            self._watched[stream.stream_id] = watched
            if self._drainer is None:
                self._drainer = threading.Thread(
                    target=self._drain, name="cliproxy-check-streams", daemon=True
                )
                self._drainer.start()
        stream.set_waker(self._wake.set)

    def wait(self, timeout: float) -> bool:
        """Wait until every async stream has ended; False if some are still open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._watched:
                    return True
            time.sleep(0.01)
        return False

    def emit(self, plugin_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """host.stream.emit, judged, then answered by the real table."""
        self._active = time.monotonic()
        stream_id = ci_get(body, "stream_id")
        with self._lock:
            issued = isinstance(stream_id, str) and stream_id in self._issued
            closed = issued and stream_id in self._closed_by_plugin
        if not issued:
            self._note(
                f"host.stream.emit to stream_id {stream_id!r}, which no "
                "executor.execute_stream request carried",
                UNKNOWN_ID_FIX,
            )
            raise not_open(str(stream_id))
        if closed:
            self._note(
                f"host.stream.emit on stream {stream_id} after the plugin's host.stream.close",
                AFTER_CLOSE_FIX,
            )
            raise not_open(str(stream_id))
        try:
            b64decode(ci_get(body, "payload"), "payload")
        except ValueError as exc:
            self._note(f"host.stream.emit on stream {stream_id}: {exc}", BASE64_FIX)
            raise InvalidRequest(f"host.stream.emit: {exc}") from None
        return self.table.emit(plugin_id, body)

    def close(self, plugin_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """host.stream.close: `{}` always, as the real host answers."""
        self._active = time.monotonic()
        stream_id = ci_get(body, "stream_id")
        with self._lock:
            if isinstance(stream_id, str) and stream_id in self._issued:
                self._closed_by_plugin.add(stream_id)
        return self.table.close_stream(plugin_id, body)

    def shutdown(self) -> None:
        """Abort what is still open (the run is over)."""
        self.table.shutdown()

    def _drain(self) -> None:
        # Bounded: every watched stream ends by its deadline, and the loop ends with them.
        while True:
            with self._lock:
                watched = list(self._watched.values())
                if not watched:
                    self._drainer = None
                    return
            self._wake.clear()
            for item in watched:
                self._read(item)
            self._wake.wait(0.01)

    def _read(self, item: _Watched) -> None:
        stream = item.stream
        while True:
            chunk = stream.take(0)
            if chunk is None:
                break
            if not isinstance(chunk, StreamChunk):  # END
                self._finish(item, closed=True)
                return
            item.chunks += 1
            # Idle time counts, not age: a slow machine's streams progress late, not never.
            item.deadline = time.monotonic() + limits.STREAM_CLOSE_TIMEOUT
            if chunk.error:  # an error chunk is the last one a consumer reads
                self.table.forget(stream)
                self._finish(item, closed=True)
                return
        now = time.monotonic()
        idle = now >= item.deadline and now >= self._active + limits.STREAM_CLOSE_TIMEOUT
        if idle or now >= item.opened + limits.STREAM_OPEN_MAX:
            self._note(
                f"executor.execute_stream answered no chunks, but stream {stream.stream_id} "
                + (
                    f"was not closed within {limits.STREAM_CLOSE_TIMEOUT:g} s of its last "
                    "chunk, while the plugin made no other host.stream call"
                    if idle
                    else f"was still open {limits.STREAM_OPEN_MAX:g} s after it was opened"
                )
                + f" ({item.chunks} chunks emitted)",
                NEVER_CLOSED_FIX,
            )
            self.table.forget(stream, "check: the stream was not closed in time")
            self._finish(item, closed=False)

    def _finish(self, item: _Watched, *, closed: bool) -> None:
        with self._lock:
            self._watched.pop(item.stream.stream_id, None)
            self.chunks += item.chunks
            self.closed += closed
            self.longest = max(self.longest, time.monotonic() - item.opened)
