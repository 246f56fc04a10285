"""Blocking host calls run off the event loop on daemon threads, a bounded number at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final, TypeVar

from ..backends.pool import DaemonPool

__all__ = ["MAX_OFFLOADED", "Offload"]

T = TypeVar("T")

# Host calls of /v1 requests running at once; more wait for a slot on the loop. The same
# bound as the thread limiter that starlette's run_in_threadpool would have applied.
MAX_OFFLOADED: Final = 40


class Offload:
    """Runs a blocking function on a thread and awaits its answer.

    Why not starlette's run_in_threadpool: anyio's hand-off (a capacity limiter, a cancel
    scope and a worker queue per call) cost twice the time of a plain future resolved with
    call_soon_threadsafe, on the path of every /v1 call (bench figure 9). The threads are
    daemons (a plugin stuck in C must not keep the process from exiting). A slot is given
    back when the function returns, not when its caller stops waiting (a client gone
    mid-call), so the bound holds for the threads, not only for the waiters.
    """

    def __init__(self, name: str, limit: int = MAX_OFFLOADED) -> None:
        self._pool = DaemonPool(name)
        self._limit = limit
        # A semaphore belongs to one event loop: one per loop that uses this (a test
        # server's loop after another's).
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on a thread; its answer, or its exception raised here."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self._limit))
        slots = self._slots[1]
        await slots.acquire()
        answer: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:
                _deliver(loop, _fail, answer, exc, slots)
            else:
                _deliver(loop, _succeed, answer, result, slots)

        try:
            self._pool.submit(job)
        except BaseException:
            slots.release()
            raise
        return await answer


def _deliver(loop: asyncio.AbstractEventLoop, settle: Callable[..., None], *args: object) -> None:
    # A closed loop (the server stopped) raises RuntimeError: nobody is waiting then.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, *args)


def _succeed(answer: asyncio.Future[T], result: T, slots: asyncio.Semaphore) -> None:
    slots.release()
    if not answer.done():  # its caller may have been cancelled meanwhile
        answer.set_result(result)


def _fail(answer: asyncio.Future[T], exc: BaseException, slots: asyncio.Semaphore) -> None:
    slots.release()
    if not answer.done():
        answer.set_exception(exc)
