"""Checks under pressure: many threads at once, a 1 MiB request, repeated load and unload."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from ...abi import Method
from ...backends.native import INIT_SYMBOL
from ...backends.protocol import PluginBackend
from ...envelope import b64encode
from ...errors import PluginError
from ...host.facade import lifecycle_request
from .. import limits
from ..report import CheckResult
from ..run import TIMEOUT_FIX, Answer, Hung, Run
from ..samples import BASE_CONFIG, BYTE_FIELDS, UNKNOWN_METHOD, config_yaml

# Growth after the load/unload cycles that counts as a leak rather than noise.
_FD_SLACK = 3
_THREAD_SLACK = 1

# -- concurrency ------------------------------------------------------------------------------


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _compare(baseline: Answer, answer: Answer) -> Literal["same", "varies", "differs"]:
    if (answer.kind, answer.code) != (baseline.kind, baseline.code):
        return "differs"
    if answer.kind == "ok" and answer.result != baseline.result:
        return "varies" if _shape(answer.result) == _shape(baseline.result) else "differs"
    return "same"


@dataclass
class _Tally:
    """How the answers under load compared with each method's first answer."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: Counter[str] = field(default_factory=Counter)
    varies: list[str] = field(default_factory=list)
    differs: list[str] = field(default_factory=list)

    def add(self, method: str, baseline: Answer, answer: Answer) -> None:
        verdict = _compare(baseline, answer)
        with self.lock:
            self.calls[verdict] += 1
            if verdict == "differs" and len(self.differs) < limits.MAX_LISTED:
                self.differs.append(
                    f"{method} {answer.describe()} instead of {baseline.describe()}"
                )
            elif verdict == "varies" and method not in self.varies:
                self.varies.append(method)


def _hammer(run: Run, backend: PluginBackend, targets: list[tuple[str, Answer]]) -> _Tally | None:
    """Repeat the targets from THREADS threads for CONCURRENCY_SECONDS; None if a call hung."""
    requests = {m: orjson.dumps(run.request_for(m)) for m, _ in targets}
    tally = _Tally()
    deadline = time.monotonic() + limits.CONCURRENCY_SECONDS

    def worker(offset: int) -> None:
        for i in itertools.count(offset):
            if time.monotonic() >= deadline or run.stuck:
                return
            method, baseline = targets[i % len(targets)]
            answer = run.exchange(backend, method, requests[method])
            tally.add(method, baseline, answer)
            if not answer.well_formed:
                return

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"cliproxy-check-{i}", daemon=True)
        for i in range(limits.THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline + limits.CALL_TIMEOUT - time.monotonic()))
    return None if any(thread.is_alive() for thread in threads) else tally


def check_concurrency(run: Run) -> list[CheckResult]:
    """Methods that answered well keep answering the same from many threads at once."""
    name = "concurrency"
    backend = run.backend
    assert backend is not None
    targets = [(m, a) for m, a in run.answers.items() if a.well_formed]
    if not targets:
        return [CheckResult(name, "skip", "no method answered a well-formed envelope to repeat")]
    tally = _hammer(run, backend, targets)
    if tally is None:
        reason = run.hung(
            f"a call did not return within {limits.CALL_TIMEOUT:g} s under {limits.THREADS} threads"
        )
        return [CheckResult(name, "fail", f"{reason} (a deadlock?)", TIMEOUT_FIX)]
    total = sum(tally.calls.values())
    rate = f"{total} calls from {limits.THREADS} threads in {limits.CONCURRENCY_SECONDS:g} s"
    if tally.differs:
        return [
            CheckResult(
                name,
                "fail",
                f"{tally.calls['differs']} of {total} answers changed under load: "
                + "; ".join(tally.differs),
                "calls come from many threads at once: guard shared state with a lock or "
                "atomics, and keep per-call state on the stack",
            )
        ]
    if tally.varies:
        return [
            CheckResult(
                name,
                "warn",
                f"{rate}; answers of {', '.join(tally.varies)} vary between calls (same shape)",
                "fine if intended (IDs, timestamps); otherwise look for unguarded shared state",
            )
        ]
    return [CheckResult(name, "pass", f"{rate}, all consistent")]


# -- a large request ----------------------------------------------------------------------------


def _large_request(run: Run) -> tuple[str, bytes]:
    """The first method that answered ok and takes a byte field, with about 1 MiB in it."""
    for method, answer in run.answers.items():
        base = run.request_for(method)
        key = next((k for k in BYTE_FIELDS if k in base), None)
        if key is None or answer.kind != "ok":
            continue
        room = limits.LARGE_REQUEST_BYTES - len(orjson.dumps({**base, key: ""}))
        # base64 turns every 3 bytes into 4; the body is valid JSON in case the plugin parses it.
        filler = b"a" * (-(-room // 4) * 3 - len(b'{"check":""}'))
        return method, orjson.dumps({**base, key: b64encode(b'{"check":"' + filler + b'"}')})
    return UNKNOWN_METHOD, orjson.dumps({"Padding": "a" * limits.LARGE_REQUEST_BYTES})


def check_large_request(run: Run) -> list[CheckResult]:
    """A request of about 1 MiB is handled (or, for the unknown method, declined)."""
    name = "1 MiB request"
    method, request = _large_request(run)
    started = time.monotonic()
    answer = run.call(method, request)
    took = f"{(time.monotonic() - started) * 1000:.0f} ms"
    size = f"{len(request) / (1 << 20):.2f} MiB"
    if answer.kind == "ok" or (answer.kind == "error" and method == UNKNOWN_METHOD):
        return [CheckResult(name, "pass", f"{method} handled a {size} request in {took}")]
    if answer.kind == "error":
        return [
            CheckResult(
                name,
                "warn",
                f"{method} answers error {answer.code} to a {size} request: {answer.message}",
                "accept large requests: bodies of several MiB are normal in LLM traffic",
            )
        ]
    reason = f"{method} with a {size} request: {answer.describe()}"
    return [CheckResult(name, "fail", reason, answer.fix)]


# -- load/unload cycles ---------------------------------------------------------------------------


def _count_entries(directory: str) -> int | None:
    try:
        return len(os.listdir(directory))
    except OSError:
        return None


def _process_resources() -> tuple[int | None, int | None]:
    """Open file descriptors and OS threads (plugin-made ones too), where the OS can tell."""
    fds = _count_entries("/proc/self/fd")
    return (fds if fds is not None else _count_entries("/dev/fd")), _count_entries(
        "/proc/self/task"
    )


def _leaks(before: tuple[int | None, int | None], after: tuple[int | None, int | None]) -> str:
    """What the process holds now that it did not before the cycles, beyond noise."""
    leaks = []
    for was, now, slack, what in (
        (before[0], after[0], _FD_SLACK, "open file descriptors"),
        (before[1], after[1], _THREAD_SLACK, "threads"),
    ):
        if was is not None and now is not None and now - was > slack:
            leaks.append(f"{now - was} more {what}")
    return " and ".join(leaks)


def _cycle(run: Run, where: str, probes: list[tuple[str, bytes]]) -> CheckResult | None:
    """Load, call the probes, close: the failure, or None when the cycle went well."""
    name = "load/unload cycles"
    try:
        backend = run.open()
    except Hung:
        return CheckResult(
            name, "fail", run.hung(f"{where}: {INIT_SYMBOL} did not return"), TIMEOUT_FIX
        )
    except PluginError as exc:
        return CheckResult(
            name,
            "fail",
            f"{where}: the plugin no longer loads: {exc.message}",
            "init must work again after shutdown: reset globals in init or shutdown",
        )
    for method, request in probes:
        answer = run.call(method, request, backend=backend, timeout=limits.LOAD_TIMEOUT)
        if not answer.well_formed:
            run.close(backend)
            return CheckResult(name, "fail", f"{where}: {method} {answer.describe()}", answer.fix)
    run.close(backend)
    if run.stuck:
        return CheckResult(name, "fail", f"{where}: {run.stuck}", TIMEOUT_FIX)
    return None


def check_cycles(run: Run) -> list[CheckResult]:
    """Load, register and unload `run.cycles` times; then it must still work, without leaks."""
    name = "load/unload cycles"
    # The cycles need the library to themselves: a second instance of the same file
    # shares its globals with the first.
    run.close_backend()
    if run.stuck:
        return [CheckResult(name, "fail", run.stuck, TIMEOUT_FIX)]
    register = (Method.REGISTER.value, lifecycle_request(config_yaml(BASE_CONFIG)))
    before = _process_resources()
    started = time.monotonic()
    for cycle in range(1, run.cycles + 1):
        failed = _cycle(run, f"cycle {cycle}", [register])
        if failed:
            return [failed]
    # The health probe: after every cycle, the plugin must still load, register and answer.
    failed = _cycle(run, f"after {run.cycles} cycles", [register, (UNKNOWN_METHOD, b"{}")])
    if failed:
        return [failed]
    seconds = time.monotonic() - started
    leaks = _leaks(before, _process_resources())
    settled = time.monotonic() + limits.LEAK_SETTLE
    while leaks and time.monotonic() < settled:  # a leak stays; a thread ending goes
        time.sleep(0.05)
        leaks = _leaks(before, _process_resources())
    done = f"{run.cycles} cycles in {seconds:.2f} s"
    if run.isolated:
        done = f"{run.cycles} cycles, each in a new worker process, in {seconds:.2f} s"
    if leaks:
        return [
            CheckResult(
                name,
                "warn",
                f"{done}, but the host now has {leaks}",
                "shutdown must stop the threads and close the files that init and calls open",
            )
        ]
    return [CheckResult(name, "pass", f"{done}; it still loads and answers, nothing leaked")]
