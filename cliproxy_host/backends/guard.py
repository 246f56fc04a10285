"""A guard around any plugin backend: circuit breaker, concurrency cap, timeout, response cap."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from ..errors import (
    PluginBusy,
    PluginCrashed,
    PluginError,
    PluginResponseError,
    PluginTimeout,
    PluginUnavailable,
    ResponseTooLarge,
)
from .protocol import Health, PluginBackend, State

log = logging.getLogger(__name__)

# Failures that say the plugin itself is in trouble (not that a request was bad).
_TROUBLE: Final = (PluginCrashed, PluginTimeout, PluginResponseError)


@dataclass(frozen=True)
class GuardLimits:
    timeout_s: float | None = None  # None: the call runs on the caller's thread, untimed
    max_concurrent: int | None = None
    busy_wait_s: float = 5.0
    max_response_bytes: int | None = None
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0


class _DaemonPool:
    """Threads that run timed calls. Daemon threads: a call stuck in C forever must not
    keep the interpreter from exiting, which a ThreadPoolExecutor's threads would."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], bytes], Future[bytes]]] = (
            queue.SimpleQueue()
        )
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], bytes]) -> Future[bytes]:
        future: Future[bytes] = Future()
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                threading.Thread(target=self._work, name=self._name, daemon=True).start()
        self._jobs.put((job, future))
        return future

    def _work(self) -> None:
        while True:
            job, future = self._jobs.get()
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)
            with self._lock:
                self._idle += 1


class GuardedBackend:
    """Wraps a backend with the host's limits; the same interface, so the host can't tell.

    The caller decodes the envelope, so it reports the outcome: `note_failure` for an
    invalid envelope, `note_success` for a good one while `failing`.

    Circuit breaker: `breaker_failures` consecutive failures that point at the plugin
    (crash, timeout, oversized or invalid response) open the circuit; calls then fail fast
    with plugin_unavailable until `breaker_cooldown_s` has passed, when one probe call is
    let through: its success closes the circuit, its failure opens it again.
    """

    def __init__(self, backend: PluginBackend, limits: GuardLimits) -> None:
        self.backend = backend
        self.plugin_id = backend.plugin_id
        self.path: Path = backend.path
        self._limits = limits
        self._slots = (
            threading.BoundedSemaphore(limits.max_concurrent) if limits.max_concurrent else None
        )
        self._pool = _DaemonPool(f"call-{backend.plugin_id}") if limits.timeout_s else None
        self._lock = threading.Lock()
        self._failures = 0
        # Whether failures are counted: the caller must then report how the answer
        # decoded. A plain attribute, read on every call.
        self.failing = False
        self._opened_at: float | None = None
        self._probing = False
        self._stuck = 0  # timed-out in-process calls still running in the plugin
        self._last_error: str | None = None
        # No slots and no timer: a call goes straight to the backend while the circuit
        # is closed (the common case), without the bookkeeping of the general path.
        self._direct = self._slots is None and self._pool is None

    def call(self, method: str, request: bytes) -> bytes:
        if self._direct and self._opened_at is None:
            try:
                data = self.backend.call(method, request)
                limit = self._limits.max_response_bytes
                if limit is not None and len(data) > limit:
                    raise self._too_large(method, len(data), limit)
            except PluginError as exc:
                if isinstance(exc, _TROUBLE):
                    self.note_failure(str(exc))
                raise
            return data
        probe = False
        if self._opened_at is not None:
            probe = self._admit(method)
        if self._slots is not None and not self._slots.acquire(timeout=self._limits.busy_wait_s):
            self._end_probe(probe)
            raise PluginBusy(
                f"all {self._limits.max_concurrent} concurrent call slots stayed busy for "
                f"{self._limits.busy_wait_s:g}s; retry later or raise max_concurrent_requests",
                plugin_id=self.plugin_id,
                method=method,
                retryable=True,
                http_status=503,
            )
        try:
            data = self._run(method, request)
            limit = self._limits.max_response_bytes
            if limit is not None and len(data) > limit:
                raise self._too_large(method, len(data), limit)
        except PluginError as exc:
            if isinstance(exc, _TROUBLE):
                self.note_failure(str(exc))
            elif probe:
                self.note_success()
            raise
        finally:
            if self._slots is not None:
                self._slots.release()
            self._end_probe(probe)
        return data

    def _too_large(self, method: str, size: int, limit: int) -> PluginError:
        return ResponseTooLarge(
            f"response of {size} bytes exceeds max_response_bytes ({limit})",
            plugin_id=self.plugin_id,
            method=method,
        )

    def _run(self, method: str, request: bytes) -> bytes:
        if self._pool is None:
            return self.backend.call(method, request)
        timeout = self._limits.timeout_s
        future = self._pool.submit(lambda: self.backend.call(method, request))
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            with self._lock:
                self._stuck += 1
            future.add_done_callback(self._unstuck)
            log.error(
                "plugin %s: %s is still running after %gs; its thread cannot be reclaimed "
                "in-process (use isolation: process for plugins that hang)",
                self.plugin_id,
                method,
                timeout,
            )
            raise PluginTimeout(
                f"{method} did not answer within {timeout:g}s",
                plugin_id=self.plugin_id,
                method=method,
                retryable=True,
                http_status=504,
            ) from None

    def _unstuck(self, future: Future[bytes]) -> None:
        with self._lock:
            self._stuck -= 1

    def _admit(self, method: str) -> bool:
        """With the circuit open: fail fast, or let this call through as the one probe."""
        with self._lock:
            opened = self._opened_at
            if opened is None:
                return False
            if self._probing or time.monotonic() - opened < self._limits.breaker_cooldown_s:
                raise PluginUnavailable(
                    f"circuit open after {self._failures} consecutive failures "
                    f"(last: {self._last_error}); calls resume after a successful probe",
                    plugin_id=self.plugin_id,
                    method=method,
                    retryable=True,
                    http_status=503,
                )
            self._probing = True
            return True

    def _end_probe(self, probe: bool) -> None:
        if probe:
            with self._lock:
                self._probing = False

    def note_failure(self, reason: str) -> None:
        """Count a failure that points at the plugin (the host reports invalid envelopes)."""
        with self._lock:
            self._failures += 1
            self.failing = True
            self._last_error = reason
            if self._failures >= self._limits.breaker_failures:
                if self._opened_at is None:
                    log.error(
                        "plugin %s: circuit opened after %d consecutive failures: %s",
                        self.plugin_id,
                        self._failures,
                        reason,
                    )
                self._opened_at = time.monotonic()

    def note_success(self) -> None:
        """The caller decoded a good envelope: reset the count, close an open circuit."""
        with self._lock:
            if self._opened_at is not None:
                log.info("plugin %s: circuit closed, the probe call succeeded", self.plugin_id)
            self._failures = 0
            self.failing = False
            self._opened_at = None

    def health(self) -> Health:
        inner = self.backend.health()
        if inner.state is not State.RUNNING:
            return inner
        with self._lock:
            if self._stuck:
                return replace(
                    inner,
                    state=State.UNHEALTHY,
                    last_error=f"{self._stuck} timed-out call(s) still running in the plugin",
                )
            if self._opened_at is not None:
                return replace(
                    inner, state=State.UNHEALTHY, last_error=f"circuit open: {self._last_error}"
                )
            return replace(inner, last_error=inner.last_error or self._last_error)

    def close(self) -> None:
        self.backend.close()
