"""The backends' thread pool: daemon threads, reused, retired when idle, closed for good."""

from __future__ import annotations

import threading
import time

import pytest

from cliproxy_host.backends.pool import DaemonPool


def test_jobs_run_on_daemon_threads_that_are_reused_then_retire_when_idle() -> None:
    pool = DaemonPool("tpool", idle_s=0.2)
    first = pool.run(threading.current_thread).result(timeout=5)
    second = pool.run(threading.current_thread).result(timeout=5)
    assert first is second  # the idle thread took the next job
    assert first.daemon
    assert first.name.startswith("tpool-")
    first.join(timeout=5)  # idle for idle_s: it exits
    assert not first.is_alive()
    pool.close(1.0)


def test_a_job_that_waits_for_a_later_job_does_not_deadlock() -> None:
    pool = DaemonPool("tpool")
    later = threading.Event()
    waiting = pool.run(lambda: later.wait(5))
    pool.submit(later.set)
    assert waiting.result(timeout=5) is True
    pool.close(1.0)


def test_a_closed_pool_refuses_jobs_and_its_threads_end() -> None:
    pool = DaemonPool("tpool")
    thread = pool.run(threading.current_thread).result(timeout=5)
    pool.close(1.0)
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(lambda: None)
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not thread.is_alive()


def test_an_exception_in_a_job_lands_in_its_future() -> None:
    pool = DaemonPool("tpool")

    def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        pool.run(boom).result(timeout=5)
    assert pool.run(lambda: 7).result(timeout=5) == 7  # the thread lived on
    pool.close(1.0)
