"""IsolationLimits: how a plugin's worker process is run, and when it is given up on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IsolationLimits:
    """How an isolated plugin's worker is run, restarted and given up on.

    The limits of a call (its timeout, concurrency, the breaker) are the guard's
    (`GuardLimits`); the guard hands the isolated backend each call's timeout.
    """

    memory_limit_mb: int | None = None
    cpu_limit_s: int | None = None
    # The most a worker may send: a larger response is refused in the worker, before it
    # crosses, and a larger frame means a broken worker (the host sets it to the guard's
    # max_response_bytes).
    max_response_bytes: int = 64 * 1024 * 1024
    fuse_crashes: int = 5  # crashes within fuse_window_s that fuse the plugin
    fuse_window_s: float = 60.0
    backoff_initial_s: float = 0.0  # first restart immediately
    backoff_max_s: float = 30.0  # growing (x2 from 0.25 s), capped here
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 2.0
    start_timeout_s: float = 10.0  # worker start + dlopen + init
    # A call polls for its answer this long before it sleeps, and the worker polls for
    # the next call; 0 turns it off. Methods whose calls outlast it a little are polled
    # for a little longer (client.poll_time), slower ones not at all.
    spin_us: int = 50
    line_idle_s: float = 30.0  # call lines unused this long are closed (one stays open)
    # The sha256 of the bytes the host verified (trust/): the worker reads the file once,
    # refuses other bytes, and loads that copy from memory. None: loaded from its path.
    sha256: str | None = None
    # Call lines served in C by the worker's native line core (core_build.py, linecore.c)
    # rather than in Python; without a C compiler, in Python whatever this says.
    native_core: bool = True
    # A worker spawned ahead and kept waiting, all imported, for the next restart: a
    # restart then costs the plugin's load, not a Python start (supervisor.py). One idle
    # process per isolated plugin.
    standby_worker: bool = True

    def __post_init__(self) -> None:
        positive = {
            "memory_limit_mb": self.memory_limit_mb,
            "cpu_limit_s": self.cpu_limit_s,
            "max_response_bytes": self.max_response_bytes,
            "fuse_crashes": self.fuse_crashes,
            "fuse_window_s": self.fuse_window_s,
            "ping_interval_s": self.ping_interval_s,
            "ping_timeout_s": self.ping_timeout_s,
            "start_timeout_s": self.start_timeout_s,
            "line_idle_s": self.line_idle_s,
        }
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise ValueError(f"IsolationLimits.{name} must be positive, got {value}")
        if self.spin_us < 0:
            raise ValueError(f"IsolationLimits.spin_us must not be negative, got {self.spin_us}")
        if self.backoff_initial_s < 0 or self.backoff_max_s < 0:
            raise ValueError("IsolationLimits backoff times must not be negative")
