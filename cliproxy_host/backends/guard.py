"""The one fault layer around every backend: breaker, concurrency, timeouts, size, decoding."""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from ..envelope import decode
from ..errors import (
    PluginBusy,
    PluginCrashed,
    PluginError,
    PluginResponseError,
    PluginTimeout,
    PluginUnavailable,
    ResponseTooLarge,
)
from .pool import DaemonPool
from .protocol import CONFIG_METHODS, DEFAULT_DRAIN_TIMEOUT, Health, PluginBackend, State

log = logging.getLogger(__name__)

# Failures that say the plugin itself is in trouble (not that a request was bad).
_TROUBLE: Final = (PluginCrashed, PluginTimeout, PluginResponseError)


@dataclass(frozen=True)
class GuardLimits:
    """What the host allows one plugin's calls, wherever the plugin runs."""

    timeout_s: float | None = None  # None: calls are not timed
    max_concurrent: int | None = None
    busy_wait_s: float = 5.0
    max_response_bytes: int | None = None
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0


class GuardedBackend:
    """A backend behind the host's limits: what the host calls. Thread-safe.

    `call` answers the decoded result of the plugin's envelope, or raises the PluginError
    it carries or that went wrong, and counts the outcome itself.

    Timeouts: a backend that `ends_overruns` (a worker process) is handed the timeout and
    kills what overruns it. Any other backend's timed calls run on the guard's pool, and
    the caller stops waiting at the timeout; the call itself runs on (in this process it
    cannot be stopped), and the plugin shows unhealthy until it returns.

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
        self._max_response = limits.max_response_bytes
        self._slots = (
            threading.BoundedSemaphore(limits.max_concurrent) if limits.max_concurrent else None
        )
        ends_overruns = backend.ends_overruns
        # The timeout handed to the backend: only to one that keeps it itself.
        self._timeout = limits.timeout_s if ends_overruns else None
        self._pool = (
            DaemonPool(f"call-{backend.plugin_id}")
            if limits.timeout_s and not ends_overruns
            else None
        )
        self._lock = threading.Lock()
        self._failures = 0
        # Whether failures are being counted, so that a good answer must reset the count.
        # A plain attribute, read on every call.
        self._failing = False
        self._opened_at: float | None = None
        self._probing = False
        self._stuck = 0  # timed-out in-process calls still running in the plugin
        self._last_error: str | None = None
        # No slots and no timer of its own: while the circuit is closed (the common case),
        # a call goes straight to the backend, without the general path's bookkeeping.
        self._direct = self._slots is None and self._pool is None

    def call(self, method: str, request: bytes) -> Any:
        """The result `method` answers for the request envelope, or its PluginError."""
        if self._direct and self._opened_at is None:
            try:
                data = self.backend.call(method, request, self._timeout)
                limit = self._max_response
                if limit is not None and len(data) > limit:
                    raise self._too_large(method, len(data), limit)
            except _TROUBLE as exc:
                self._failed(str(exc))
                raise
        else:
            data = self._call_limited(method, request)
        try:
            result = decode(data, plugin_id=self.plugin_id, method=method)
        except PluginResponseError as exc:
            self._failed(str(exc))
            raise
        except PluginError:
            # An error envelope is a proper answer: the plugin itself is fine.
            if self._failing:
                self._succeeded()
            raise
        if self._failing:
            self._succeeded()
        if method in CONFIG_METHODS:
            self.backend.configured(request, self._limits.timeout_s)
        return result

    def _call_limited(self, method: str, request: bytes) -> bytes:
        """The general path: fail fast or probe while the circuit is open, take a slot."""
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
            limit = self._max_response
            if limit is not None and len(data) > limit:
                raise self._too_large(method, len(data), limit)
        except _TROUBLE as exc:
            self._failed(str(exc))
            raise
        except PluginError:
            if probe:
                self._succeeded()
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
        pool = self._pool
        if pool is None:
            return self.backend.call(method, request, self._timeout)
        timeout = self._limits.timeout_s
        future = pool.run(functools.partial(self.backend.call, method, request))
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

    def _failed(self, reason: str) -> None:
        """Count a failure that points at the plugin; open the circuit at the limit."""
        with self._lock:
            self._failures += 1
            self._failing = True
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

    def _succeeded(self) -> None:
        """A proper answer after failures: reset the count, close an open circuit."""
        with self._lock:
            if self._opened_at is not None:
                log.info("plugin %s: circuit closed, the probe call succeeded", self.plugin_id)
            self._failures = 0
            self._failing = False
            self._opened_at = None

    @property
    def breaker(self) -> str:
        """The circuit breaker's state: "closed", "open", or "half_open" while a probe runs."""
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._probing else "open"

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

    def close(self, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Close the backend (it drains its calls), then let the pool's threads go."""
        self.backend.close(timeout)
        if self._pool is not None:
            # Not waited for: a call stuck in the plugin ends when it ends.
            self._pool.close(0.0)
