"""Figure 1, restarts: a worker restart after a crash against a bare spawn that loads the plugin.

  restart     SIGKILL the worker of an isolated bench plugin, then call it until it answers:
              the death seen, the standby worker woken (or a new one spawned), the plugin
              loaded, the first call (backoff off, so the restart itself is timed, not the
              restart policy). Rounds are _PAUSE_S apart: a crash, not a crash loop, so
              the standby the last restart spawned has started
  restart without standby  the same with IsolationLimits.standby_worker off: a worker
              spawned after the crash (informational)
  bare spawn  a process that loads the same plugin and exits: `python -c` with
              ctypes.CDLL(path), waited for (a blocking wait: Popen.wait with a timeout
              polls, and rounds a 17 ms spawn up to 32 ms)
  loader spawn  the same with cliproxy_host's own loader (NativePlugin: cffi, init,
              shutdown) instead of ctypes: what a Python worker cannot go below
              (informational)

Medians over the rounds; the ratio is restart / bare spawn (target <= 3x).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.figures.common import Check, Context, table
from bench.harness import fmt_ns
from cliproxy_host import envelope
from cliproxy_host.backends.isolated.client import IsolatedPlugin
from cliproxy_host.backends.isolated.limits import IsolationLimits
from cliproxy_host.errors import PluginError

_CALL_TIMEOUT_S = 20.0
_SPAWN_TIMEOUT_S = 60.0
_PAUSE_S = 0.3
_BARE = "import ctypes, sys; ctypes.CDLL(sys.argv[1])"
_LOADER = (
    "import sys; from pathlib import Path; from cliproxy_host import envelope; "
    "from cliproxy_host.backends.native import NativePlugin; "
    "NativePlugin('p', Path(sys.argv[1]), lambda *a: envelope.ok({})).close()"
)


def _worker_pid(path: Path) -> int:
    """The pid of the worker process this host runs for the plugin at `path`."""
    mine = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] != mine or str(path).encode() not in cmdline:
            continue
        # The one that has loaded the plugin, not the standby waiting beside it.
        try:
            if str(path) in (entry / "maps").read_text():
                return int(entry.name)
        except OSError:
            continue
    raise RuntimeError(f"no worker process found for {path}")


def _restart_ns(plugin: IsolatedPlugin, path: Path) -> int:
    pid = _worker_pid(path)
    start = time.perf_counter_ns()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + _CALL_TIMEOUT_S
    while True:
        try:
            plugin.call("echo", b"{}", timeout=_CALL_TIMEOUT_S)
            break
        except PluginError:  # the call that saw the death, before the restart began
            if time.monotonic() > deadline:
                raise
    return time.perf_counter_ns() - start


def _spawn_ns(path: Path, script: str) -> int:
    start = time.perf_counter_ns()
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
    # Bounded by a timer that kills it, not by wait(timeout), which polls (see above).
    watchdog = threading.Timer(_SPAWN_TIMEOUT_S, proc.kill)
    watchdog.start()
    try:
        status = proc.wait()
    finally:
        watchdog.cancel()
    elapsed = time.perf_counter_ns() - start
    if status != 0:
        raise RuntimeError(f"the spawn of {path} exited with {status}")
    return elapsed


def _restarts(path: Path, rounds: int, *, standby: bool) -> list[int]:
    limits = IsolationLimits(fuse_crashes=rounds + 10, backoff_max_s=0.0, standby_worker=standby)
    plugin = IsolatedPlugin("restart", path, lambda *_: envelope.ok({}), limits)
    try:
        plugin.call("echo", b"{}")
        restarts = []
        for _ in range(rounds):
            time.sleep(_PAUSE_S)
            restarts.append(_restart_ns(plugin, path))
        return restarts
    finally:
        plugin.close()


def restart_rows(ctx: Context) -> tuple[list[Check], list[str]]:
    """Check 1n and its table."""
    rounds = 3 if ctx.settings.quick else 15
    path = ctx.private_copy("fig1-restart")
    restarts = _restarts(path, rounds, standby=True)
    cold = _restarts(path, rounds, standby=False)
    bare = [_spawn_ns(path, _BARE) for _ in range(rounds)]
    loader = [_spawn_ns(path, _LOADER) for _ in range(rounds)]
    restart, spawn = statistics.median(restarts), statistics.median(bare)
    ratio = restart / spawn
    check = Check(
        "1n",
        "worker restart after a crash / bare spawn of a process loading the plugin",
        f"{ratio:.2f}x",
        "<= 3x",
        ratio <= 3.0,
        f"restart {fmt_ns(restart)}; without standby {fmt_ns(statistics.median(cold))}; "
        f"bare spawn {fmt_ns(spawn)}; "
        f"loader spawn {fmt_ns(statistics.median(loader))}",
        ratio,
    )
    details = [
        "Worker restart after a crash (SIGKILL, then calls until one is answered; backoff "
        f"off; crashes {_PAUSE_S:g} s apart) against a bare spawn of `python -c` loading the "
        "same plugin with ctypes. The restart wakes the standby worker; without it, one is "
        f"spawned after the crash. Medians of {rounds} rounds.",
        "",
        *table(
            ["what", "median", "min", "max"],
            [
                [name, fmt_ns(statistics.median(xs)), fmt_ns(min(xs)), fmt_ns(max(xs))]
                for name, xs in (
                    ("restart", restarts),
                    ("restart without standby", cold),
                    ("bare spawn", bare),
                    ("loader spawn", loader),
                )
            ],
        ),
    ]
    return [check], details
