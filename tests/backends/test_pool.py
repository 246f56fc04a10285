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


def test_past_soft_max_a_burst_of_short_jobs_queues_rather_than_starting_threads() -> None:
    pool = DaemonPool("tpool", soft_max=2, stall_s=0.5)
    threads: set[threading.Thread] = set()
    lock = threading.Lock()

    def job() -> None:
        with lock:
            threads.add(threading.current_thread())
        time.sleep(0.001)

    futures = [pool.run(job) for _ in range(200)]
    for future in futures:
        future.result(timeout=10)
    assert len(threads) == 2  # never stalled for 0.5 s: no thread more
    pool.close(1.0)


def test_past_soft_max_jobs_waiting_for_later_jobs_still_do_not_deadlock() -> None:
    pool = DaemonPool("tpool", soft_max=1, stall_s=0.01)
    later = threading.Event()
    waiting = pool.run(lambda: later.wait(5))
    pool.submit(later.set)  # queued behind the one thread, which waits for it
    assert waiting.result(timeout=5) is True
    pool.close(1.0)


def test_past_soft_max_long_jobs_get_threads_as_the_queue_stalls() -> None:
    pool = DaemonPool("tpool", soft_max=2, stall_s=0.01)
    everyone = threading.Barrier(6, timeout=10)  # each job waits for all the others
    futures = [pool.run(everyone.wait) for _ in range(6)]
    assert sorted(f.result(timeout=10) for f in futures) == list(range(6))
    pool.close(1.0)


def test_jobs_queued_past_soft_max_still_run_when_the_pool_closes() -> None:
    pool = DaemonPool("tpool", soft_max=1, stall_s=5.0)
    gate = threading.Event()
    first = pool.run(lambda: gate.wait(5))
    queued = [pool.run(lambda n=n: n) for n in range(3)]  # type: ignore[misc]
    closer = threading.Thread(target=pool.close, args=(5.0,))
    closer.start()
    gate.set()
    assert first.result(timeout=5) is True
    assert [f.result(timeout=5) for f in queued] == [0, 1, 2]
    closer.join(timeout=10)
