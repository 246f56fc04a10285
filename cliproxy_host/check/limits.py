"""The suite's time and size budgets: how long a plugin may take, how hard it is pushed.

Modules read these as `limits.NAME` at call time rather than importing the names, so a
test can shorten a budget by patching this one module.
"""

from __future__ import annotations

from typing import Final

CALL_TIMEOUT: Final = 5.0
LOAD_TIMEOUT: Final = 10.0
THREADS: Final = 8
CONCURRENCY_SECONDS: Final = 1.0
LARGE_REQUEST_BYTES: Final = 1 << 20
CYCLES: Final = 100
# Each isolated cycle starts a worker process (about 0.5 s) and loads the library into a
# fresh process, so re-initialisation within one process is only tested in-process.
ISOLATED_CYCLES: Final = 3
RUN_GOAL_SECONDS: Final = 5.0
# How long an async execute_stream may stay open with neither a chunk of its own nor any
# host.stream.* call of the plugin (a busy plugin works through its backlog of streams),
# at most how long one may stay open at all, and how long after the last stream ended
# late emits are still caught.
STREAM_CLOSE_TIMEOUT: Final = 2.0
STREAM_OPEN_MAX: Final = 30.0
STREAM_GRACE: Final = 0.1
# How long threads and files the cycles just let go may take to be gone (a thread ending
# on a loaded machine is still listed for a moment) before what is left counts as leaked.
LEAK_SETTLE: Final = 1.0
# Room for an isolated backend's own timeouts to fire before the checker's, so that a
# worker that hangs is killed and reported rather than abandoned.
ISOLATED_SLACK: Final = 3.0
# How many examples a result lists before it stops.
MAX_LISTED: Final = 3
