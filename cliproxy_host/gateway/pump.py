"""ChunkPump: a blocking chunk iterator (a pipeline run) read on a thread of its own and
handed to the event loop a few items at a time, closable from the loop at any moment."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Generator
from typing import Final, Generic, TypeVar

__all__ = ["HANDOFF", "ChunkPump"]

T = TypeVar("T")

# Items read ahead of the client: few, so a slow client holds the plugin back (its own
# 16-chunk buffer fills and its emit waits) instead of this process buffering its output;
# enough that a fast stream is written in batches (see `ready`), not one send per chunk.
HANDOFF: Final = 16
_END: Final = object()


class ChunkPump(Generic[T]):
    """Reads `chunks` on a daemon thread of its own, never on a shared pool: a stream may
    wait minutes for its plugin, and a thousand of them must not starve the pool.

    `close()` (from the loop, idempotent) stops the thread at its next step: a hand-off it
    waits on returns at once, a `next()` it is in returns with the plugin's next chunk (the
    pipeline's own timeout bounds that wait). The thread then closes the generator itself,
    which closes the plugin's stream: a generator can only be closed by the thread that
    runs it.
    """

    def __init__(self, chunks: Generator[T, None, None], name: str) -> None:
        self._chunks = chunks
        self._loop = asyncio.get_running_loop()
        self._items: deque[object] = deque()
        self._cond = threading.Condition()
        self._closed = False
        # Set (under the lock) while the loop waits on `_ready`: only then is it woken.
        self._sleeping = False
        self._ready: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._chunks:
                if not self._hand(item):
                    return
            self._hand(_END)
        except BaseException as exc:  # handed to the loop, which raises it
            self._hand(exc)
        finally:
            self._chunks.close()

    def _hand(self, item: object) -> bool:
        with self._cond:
            while len(self._items) >= HANDOFF and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
            wake, self._sleeping = self._sleeping, False
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is closed: nobody is reading any more
                self.close()
                return False
        return True

    def _wake(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    async def next(self) -> T | None:
        """The next item; None at the end; the run's exception raised."""
        while True:
            with self._cond:
                if self._items:
                    item = self._items.popleft()
                    self._cond.notify()
                    break
                self._sleeping = True
                self._ready = self._loop.create_future()
            await self._ready
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[return-value]

    def ready(self) -> list[T]:
        """The items already handed over, without waiting; stops before the end or an
        error (the next `next()` answers those)."""
        out: list[object] = []
        with self._cond:
            while self._items:
                head = self._items[0]
                if head is _END or isinstance(head, BaseException):
                    break
                out.append(self._items.popleft())
            if out:
                self._cond.notify()
        return out  # type: ignore[return-value]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
