"""The backends' one thread pool: daemon threads, grown on demand, retired when idle."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Final, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[], object]

# soft_max of the pools that answer a plugin's host calls from its own threads: a few per
# CPU keep the CPUs busy with short callbacks (host.log, host.stream.emit); long ones
# (host.http.do) add threads as they stall.
HOST_CALL_THREADS: Final = max(8, 4 * (os.cpu_count() or 1))


class DaemonPool:
    """Runs blocking jobs on threads, growing when every thread is busy.

    Daemon threads: a job stuck in C forever must not keep the interpreter from exiting,
    which a ThreadPoolExecutor's threads would. Unbounded on purpose: a plugin call may
    wait for a host callback that calls the plugin again, so a job can depend on a later
    job, and a bounded pool could deadlock. Threads that stay idle for `idle_s` exit, so a
    burst does not pin threads forever.

    With `soft_max`, a burst of short jobs (a plugin's threads calling the host hundreds
    at a time) does not start a thread each, which would only contend for the GIL: past
    soft_max threads, jobs queue, and one more thread starts only when the queue made no
    progress for `stall_s` (every thread busy with a long job, or waiting for a later
    one), so the pool still cannot deadlock.
    """

    def __init__(
        self,
        name: str,
        idle_s: float = 30.0,
        *,
        soft_max: int | None = None,
        stall_s: float = 0.005,
    ) -> None:
        self._name = name
        self._idle_s = idle_s
        self._soft_max = soft_max
        self._stall_s = stall_s
        self._queued = 0  # jobs queued past soft_max, for whichever thread is free first
        self._taken = 0  # such jobs taken so far: the progress the stall guard watches
        self._guard: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job, minus jobs queued for them
        self._threads: set[threading.Thread] = set()
        self._closed = False
        self._serial = itertools.count(1)

    def submit(self, job: Job) -> None:
        """Run `job` on an idle thread or a new one; RuntimeError once the pool is closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name}: pool is closed")
            if self._idle:
                self._idle -= 1
                self._jobs.put(job)
                return
            if self._soft_max is not None and len(self._threads) >= self._soft_max:
                self._queued += 1
                self._jobs.put(job)
                if self._guard is None:
                    self._guard = threading.Thread(
                        target=self._guard_stalls, name=f"{self._name}-guard", daemon=True
                    )
                    self._guard.start()
                return
            thread = self._thread(job)
        thread.start()

    def _thread(self, job: Job | None) -> threading.Thread:
        """A new thread for `job` (None: the next queued one), counted (lock held)."""
        thread = threading.Thread(
            target=self._run,
            args=(job,),
            name=f"{self._name}-{next(self._serial)}",
            daemon=True,
        )
        self._threads.add(thread)
        return thread

    def _guard_stalls(self) -> None:
        """While jobs wait past soft_max: a thread more whenever none was taken for stall_s."""
        seen = -1
        while True:
            time.sleep(self._stall_s)
            with self._lock:
                if not self._queued:
                    self._guard = None
                    return
                thread = None
                if self._taken == seen:
                    self._queued -= 1
                    thread = self._thread(None)
                seen = self._taken
            if thread is not None:
                thread.start()

    def run(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the pool; its answer or its exception in a Future."""
        future: Future[T] = Future()

        def job() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.submit(job)
        return future

    def _run(self, job: Job | None) -> None:
        if job is None:  # started by the stall guard for a queued job
            job = self._claimed()
        while job is not None:
            try:
                job()
            except Exception:  # the thread must go on serving; jobs report their own errors
                log.exception("%s: a job failed", self._name)
            with self._lock:
                claimed = self._queued > 0  # queued jobs run even once the pool is closed
                if claimed:
                    self._queued -= 1
                elif self._closed:
                    break
                else:
                    self._idle += 1
            if claimed:
                job = self._claimed()
                continue
            try:
                job = self._jobs.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    # A job may have been queued for us between the timeout and the lock.
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        job = None
        with self._lock:
            self._threads.discard(threading.current_thread())

    def _claimed(self) -> Job | None:
        """The queued job this thread claimed (it is in the queue: counted before it)."""
        job = self._jobs.get()
        with self._lock:
            self._taken += 1
        return job

    def close(self, timeout: float) -> None:
        """Refuse new jobs, stop idle threads and wait (bounded) for busy ones to finish."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
            threads = list(self._threads)
        for _ in range(idle):
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
