"""The async stream check: executor.execute_stream and the plugin's host.stream.* calls."""

from __future__ import annotations

import time
from typing import Final

from .. import limits
from ..report import CheckResult
from ..run import Run

NAME: Final = "async stream"
METHOD: Final = "executor.execute_stream"


def check_async_stream(run: Run) -> list[CheckResult]:
    """One more execute_stream, then every stream of the run must have ended well: closed
    in time, no emit after close, payloads base64, only the stream ids the plugin was given."""
    assert run.registration is not None
    if "executor" not in run.registration.flags:
        return [CheckResult(NAME, "skip", "not an executor: no execute_stream to stream")]
    started = time.monotonic()
    answer = run.call(METHOD, run.request_for(METHOD))
    watch = run.host.streams
    # Every stream ends by its close or its deadline; then a moment for late emits.
    watch.wait(limits.STREAM_OPEN_MAX + 1.0)
    time.sleep(limits.STREAM_GRACE)
    seconds = time.monotonic() - started
    if watch.findings:
        shown = watch.findings[: limits.MAX_LISTED]
        return [
            CheckResult(
                NAME,
                "fail",
                "; ".join(f.describe() for f in shown),
                " / ".join(dict.fromkeys(f.fix for f in shown)),
                seconds,
            )
        ]
    if not answer.well_formed:
        return [CheckResult(NAME, "fail", f"{METHOD} {answer.describe()}", answer.fix, seconds)]
    if answer.kind == "error":
        return [CheckResult(NAME, "skip", f"{METHOD} answers error {answer.code}", seconds=seconds)]
    if not watch.async_streams:
        return [
            CheckResult(
                NAME,
                "pass",
                f"{METHOD} answers its chunks at once (synchronous; host.stream.emit unused)",
                seconds=seconds,
            )
        ]
    return [
        CheckResult(
            NAME,
            "pass",
            f"{watch.async_streams} async streams, {watch.chunks} chunks through "
            f"host.stream.emit, each closed with host.stream.close (longest open "
            f"{watch.longest * 1000:.0f} ms)",
            seconds=seconds,
        )
    ]
