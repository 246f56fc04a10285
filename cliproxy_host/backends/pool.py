"""The backends' one thread pool: daemon threads, grown on demand, retired when idle."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[], object]


class DaemonPool:
    """Runs blocking jobs on threads, growing when every thread is busy.

    Daemon threads: a job stuck in C forever must not keep the interpreter from exiting,
    which a ThreadPoolExecutor's threads would. Unbounded on purpose: a plugin call may
    wait for a host callback that calls the plugin again, so a job can depend on a later
    job, and a bounded pool could deadlock. Threads that stay idle for `idle_s` exit, so a
    burst does not pin threads forever.
    """

    def __init__(self, name: str, idle_s: float = 30.0) -> None:
        self._name = name
        self._idle_s = idle_s
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
            thread = threading.Thread(
                target=self._run,
                args=(job,),
                name=f"{self._name}-{next(self._serial)}",
                daemon=True,
            )
            self._threads.add(thread)
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
        while job is not None:
            try:
                job()
            except Exception:  # the thread must go on serving; jobs report their own errors
                log.exception("%s: a job failed", self._name)
            with self._lock:
                if self._closed:
                    break
                self._idle += 1
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
