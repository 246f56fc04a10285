"""Offload: blocking calls off the event loop, answers and errors back, a bounded number."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cliproxy_host.gateway.offload import Offload


def test_answers_and_exceptions_come_back_from_the_thread() -> None:
    offload = Offload("t")

    def boom() -> None:
        raise ValueError("from the thread")

    async def main() -> tuple[str, str]:
        name = await offload.run(lambda: threading.current_thread().name)
        with pytest.raises(ValueError, match="from the thread"):
            await offload.run(boom)
        return name, threading.current_thread().name

    worker, loop_thread = asyncio.run(main())
    assert worker.startswith("t-")
    assert worker != loop_thread


def test_a_cancelled_caller_keeps_its_slot_until_the_function_returns() -> None:
    # The bound is on threads, not waiters: a client that went away must not let another
    # call start while its own still runs.
    offload = Offload("t", limit=1)
    release = threading.Event()
    started: list[str] = []

    def slow() -> str:
        started.append("slow")
        release.wait(10)
        return "slow"

    def quick() -> str:
        started.append("quick")
        return "quick"

    async def main() -> str:
        first = asyncio.ensure_future(offload.run(slow))
        for _ in range(200):  # bounded: until the thread runs it
            if started:
                break
            await asyncio.sleep(0.005)
        first.cancel()
        second = asyncio.ensure_future(offload.run(quick))
        await asyncio.sleep(0.1)
        assert started == ["slow"], "a second call started while the first still ran"
        release.set()
        return await asyncio.wait_for(second, 5)

    assert asyncio.run(main()) == "quick"
    assert started == ["slow", "quick"]


def test_two_event_loops_one_after_the_other() -> None:
    offload = Offload("t", limit=1)
    for _ in range(2):
        assert asyncio.run(offload.run(lambda: 7)) == 7
