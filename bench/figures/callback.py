"""Figure 2: the host callback round trip (the plugin calls host.log inside a call).

bench_plugin.c's `log` method calls host->call("host.log", <~80 B request>) n times in
a row, releasing each answer with host->free_buffer, and times the loop itself in C
(clock_gettime), so the figure is the cost of one plugin->host call as the plugin
sees it, with nothing of the outer call in it.

  host  the plugin loaded by PluginHost: the real host callback (HostCallbacks, host.log)
  raw   the plugin loaded by baselines/raw.py: a bare cffi callback that answers a
        constant envelope (malloc + memcpy), freed by a bare cffi free callback
  isolated  the same plugin with isolation: process (informational): the host.log
        travels from the worker to the host and back
  ... thread    the same n host.log calls made on a thread the plugin starts
        (`thread_log`): in isolated mode they travel the control socket and are answered
        on the host's pool, not on the caller's call line

host.log is called at level debug with the plugin loggers set to INFO: the line is
dropped after the level check, so logging I/O does not dominate.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

from bench.baselines.raw import RawPlugin
from bench.figures.common import (
    Check,
    Context,
    FigureResult,
    loaded_host,
    quiet_plugin_logs,
    table,
)
from bench.harness import Candidate, compare, fmt_stats

TITLE = "Host callback round trip (plugin calls host.log inside a call)"

PID = "bench"


def _checked(result: Any, n: int) -> int:
    if result["failures"] or result["n"] != n:
        raise RuntimeError(f"host.log from the plugin failed: {result}")
    return int(result["ns"])


def run(ctx: Context) -> FigureResult:
    result = FigureResult(2, TITLE)
    with ExitStack() as stack:
        stack.enter_context(quiet_plugin_logs())
        host = stack.enter_context(loaded_host(ctx, "fig2-host", {PID: ctx.bench_plugin()}))
        isolated = stack.enter_context(
            loaded_host(ctx, "fig2-isolated", {PID: ctx.bench_plugin()}, isolation="process")
        )
        raw = RawPlugin(ctx.private_copy("fig2-raw"))
        stack.callback(raw.close)
        buffer = raw.new_buffer()

        def host_cb(n: int) -> int:
            return _checked(host.call(PID, "log", {"n": n}), n)

        def isolated_cb(n: int) -> int:
            return _checked(isolated.call(PID, "log", {"n": n}), n)

        def host_thread_cb(n: int) -> int:
            return _checked(host.call(PID, "thread_log", {"n": n}), n)

        def isolated_thread_cb(n: int) -> int:
            return _checked(isolated.call(PID, "thread_log", {"n": n}), n)

        def raw_cb(n: int) -> int:
            return _checked(raw.call(b"log", {"n": n}, buffer), n)

        # The whole outer call with one host.log inside (informational).
        def host_outer(n: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(n):
                host.call(PID, "log", {"n": 1})
            return time.perf_counter_ns() - start

        def raw_outer(n: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(n):
                raw.call(b"log", {"n": 1}, buffer)
            return time.perf_counter_ns() - start

        candidates: dict[str, Candidate] = {
            "host callback": host_cb,
            "raw callback": raw_cb,
            "host.call(log n=1)": host_outer,
            "raw call(log n=1)": raw_outer,
            "isolated callback": isolated_cb,
            "host thread callback": host_thread_cb,
            "isolated thread callback": isolated_thread_cb,
        }
        m = compare(candidates, ctx.settings)

    ratio = m.ratio("host callback", "raw callback")
    result.checks += [
        Check.ratio(
            "2a",
            "plugin->host call: real host.log / raw cffi callback",
            ratio,
            target="<= 2x",
            met=ratio.value <= 2.0,
            absolute=(
                f"host.log {fmt_stats(m['host callback'])}; raw {fmt_stats(m['raw callback'])}"
            ),
        ),
        Check.ratio(
            "2b",
            "outer call with one host.log inside: host.call / raw (informational)",
            m.ratio("host.call(log n=1)", "raw call(log n=1)"),
            absolute=f"host.call {fmt_stats(m['host.call(log n=1)'])}",
        ),
        Check.ratio(
            "2c",
            "host.log from an isolated plugin's call / in-process (informational)",
            m.ratio("isolated callback", "host callback"),
            absolute=f"isolated {fmt_stats(m['isolated callback'])}",
        ),
        Check.ratio(
            "2d",
            "host.log from an isolated plugin's own thread / in-process (informational)",
            m.ratio("isolated thread callback", "host thread callback"),
            absolute=(
                f"isolated, plugin thread {fmt_stats(m['isolated thread callback'])}; "
                f"in-process, plugin thread {fmt_stats(m['host thread callback'])}"
            ),
        ),
    ]
    rows = [
        [name, fmt_stats(stats), f"{stats.spread_pct():.0f}%", str(m.iterations[name])]
        for name, stats in m.stats.items()
    ]
    result.details += [
        "Per plugin->host call, timed in C inside the plugin (`log` method, n calls in a "
        "row). host.log at level debug with the plugin loggers at INFO: the line is "
        "dropped after the level check, no logging I/O.",
        "",
        *table(["candidate", "per call", "IQR / median", "n per round"], rows),
    ]
    return result
