"""Figure 1: a small envelope round trip (~100 B request, method echo of the bench plugin).

Candidates, all calling the same C function (bench_plugin.c's echo) with the same bytes:
  host      PluginHost.call(plugin_id, "echo", request_dict) on a host loaded from YAML
  host, metrics off   the same on a host with `metrics: {enabled: false}`: what counting
            each call in its plugin's series (and timing one in 7) costs (1o)
  raw       bare cffi function pointer + orjson.dumps / orjson.loads (baselines/raw.py)
  ctypes    a hand-written ctypes loader with stdlib json (baselines/ctypes_loader.py)
  ctypes+orjson   the same with orjson (informational: how much of the gap is json)
  socket    JSON-RPC 2.0 over a Unix socket to a process that hosts the plugin
  isolated  PluginHost with the plugin in a worker process (isolation: process)
  isolated, spin-us 0   the same with polling before sleeping turned off (informational)
  Python socket plugin   PluginHost.call to a plugin program in Python on the SDK
            (bench/plugins/echo_program.py, docs/PROTOCOL.md), started from `command`;
            the caller reads its own answer, the SDK runs the call on the thread that
            read it, and both poll for spin-us (50) while a CPU is spare
  Extism    the Extism Python SDK calling a wasm echo (bench/plugins/echo.wat), sandboxed
            in-process (baselines/extism_echo.py; needs the bench extra, else not measured)

Then the same candidates again with two busy background processes (the loaded variant,
bench/busy.py), where the time of one isolated call goes (its layers on the running
worker, figures/breakdown.py; the socket wire's hops, figures/hops.py), and a worker
restart against a bare spawn (figures/restart.py).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from bench.baselines.ctypes_loader import CtypesPlugin
from bench.baselines.extism_echo import ExtismEcho, ExtismUnavailable
from bench.baselines.jsonrpc_server import JsonRpcClient
from bench.baselines.raw import RawPlugin
from bench.busy import busy_processes
from bench.figures.breakdown import call_path_breakdown, isolated_breakdown
from bench.figures.common import (
    SMALL_REQUEST,
    Check,
    Context,
    FigureResult,
    loaded_host,
    program_host,
    table,
)
from bench.figures.hops import hop_table
from bench.figures.restart import restart_rows
from bench.harness import Candidate, Measured, Settings, compare, fmt_stats
from cliproxy_host import PluginHost

TITLE = "Small envelope round trip (host.call, ~100 B request)"

PID = "bench"
NO_SPIN = "isolated, spin-us 0"
METRICS_OFF = "host.call, metrics off"
METRICS_OFF_CONFIG = {"metrics": {"enabled": False}}
EXTISM = "Extism"
PROGRAM = "Python socket plugin"
PROGRAM_SCRIPT = Path(__file__).resolve().parents[1] / "plugins" / "echo_program.py"
BUSY_PROCESSES = 2
DEFAULT_SPIN_US = 50  # IsolationLimits.spin_us, what "isolated" runs with


def _loop(call: Callable[[], Any]) -> Candidate:
    def run(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            call()
        return time.perf_counter_ns() - start

    return run


def run(ctx: Context) -> FigureResult:
    result = FigureResult(1, TITLE)
    request = dict(SMALL_REQUEST)
    with ExitStack() as stack:
        host = stack.enter_context(loaded_host(ctx, "fig1-host", {PID: ctx.bench_plugin()}))
        bare = stack.enter_context(
            loaded_host(
                ctx, "fig1-metrics-off", {PID: ctx.bench_plugin()}, extra=METRICS_OFF_CONFIG
            )
        )
        raw = RawPlugin(ctx.private_copy("fig1-raw"))
        stack.callback(raw.close)
        ct = CtypesPlugin(ctx.private_copy("fig1-ctypes"))
        ct_orjson = CtypesPlugin(ctx.private_copy("fig1-ctypes-orjson"), use_orjson=True)
        sock_dir = ctx.workdir / "fig1-socket"
        sock_dir.mkdir()
        rpc = JsonRpcClient(ctx.private_copy("fig1-socket"), sock_dir / "rpc.sock")
        stack.callback(rpc.close)
        buffer = raw.new_buffer()

        host_call, raw_call, bare_call = host.call, raw.call, bare.call
        calls: dict[str, Callable[[], Any]] = {
            "host.call": lambda: host_call(PID, "echo", request),
            METRICS_OFF: lambda: bare_call(PID, "echo", request),
            "raw": lambda: raw_call(b"echo", request, buffer),
            "ctypes": lambda: ct.call("echo", request),
            "ctypes+orjson": lambda: ct_orjson.call("echo", request),
            "socket JSON-RPC": lambda: rpc.call("echo", request),
        }
        iso_hosts: dict[str, PluginHost] = {}
        for name, spin_us in (("isolated", None), (NO_SPIN, 0)):
            settings = {} if spin_us is None else {"spin-us": spin_us}
            iso_host = stack.enter_context(
                loaded_host(
                    ctx,
                    f"fig1-{name}",
                    {PID: ctx.bench_plugin()},
                    plugins_settings=settings,
                    isolation="process",
                )
            )
            calls[name] = functools.partial(iso_host.call, PID, "echo", request)
            iso_hosts[name] = iso_host
        prog_host = stack.enter_context(
            program_host(ctx, "fig1-program", PID, [sys.executable, str(PROGRAM_SCRIPT)])
        )
        calls[PROGRAM] = functools.partial(prog_host.call, PID, "echo", request)
        extism_note = ""
        try:
            calls[EXTISM] = functools.partial(ExtismEcho().call, "echo", request)
        except ExtismUnavailable as exc:
            extism_note = f"Extism not measured: {exc}."
        for name, call in calls.items():
            if call() != request:
                raise RuntimeError(f"{name}: echo did not answer the request back")

        # Each candidate's loop is its own closure: the loop overhead is the same for all.
        candidates = {name: _loop(call) for name, call in calls.items()}
        m = compare(candidates, ctx.settings)
        loaded = _loaded(candidates, ctx.settings)
        breakdown = call_path_breakdown(ctx, host, raw, PID, request)
        iso_breakdown = isolated_breakdown(ctx, iso_hosts["isolated"], PID, request)
        hops = hop_table(
            ctx.private_copy("fig1-hops"),
            request,
            calls=200 if ctx.settings.quick else 5000,
            spin_us=DEFAULT_SPIN_US,
            isolated_ns=m["isolated"].median,
        )

    size = len(orjson.dumps(request))
    host_vs_raw = m.ratio("host.call", "raw")
    ctypes_vs_host = m.ratio("ctypes", "host.call")
    result.checks += [
        Check.ratio(
            "1a",
            "host.call / raw",
            host_vs_raw,
            target="<= 1.5x",
            met=host_vs_raw.value <= 1.5,
            absolute=f"host.call {fmt_stats(m['host.call'])}; raw {fmt_stats(m['raw'])}",
        ),
        Check.ratio(
            "1b",
            "ctypes / host.call (how much faster than ctypes)",
            ctypes_vs_host,
            target=">= 3x",
            met=ctypes_vs_host.value >= 3.0,
            absolute=f"ctypes (stdlib json) {fmt_stats(m['ctypes'])}",
        ),
        Check.ratio(
            "1c",
            "ctypes / raw: the most 1b could reach (a host as fast as the floor)",
            m.ratio("ctypes", "raw"),
        ),
        Check.ratio(
            "1d",
            "ctypes+orjson / host.call (informational)",
            m.ratio("ctypes+orjson", "host.call"),
            absolute=f"ctypes+orjson {fmt_stats(m['ctypes+orjson'])}",
        ),
        Check.ratio(
            "1e",
            "socket JSON-RPC / raw (the out-of-process baseline)",
            m.ratio("socket JSON-RPC", "raw"),
            absolute=f"socket JSON-RPC {fmt_stats(m['socket JSON-RPC'])}",
        ),
    ]
    metrics_cost = m.ratio("host.call", METRICS_OFF)
    result.checks.append(
        Check.ratio(
            "1o",
            "host.call with metrics on / off (counting every call, timing one in 7)",
            metrics_cost,
            target="<= 1.1x",
            met=metrics_cost.value <= 1.1,
            absolute=f"metrics off {fmt_stats(m[METRICS_OFF])}",
        )
    )
    iso_vs_raw = m.ratio("isolated", "raw")
    socket_vs_iso = m.ratio("socket JSON-RPC", "isolated")
    result.checks += [
        Check.ratio(
            "1f",
            "isolated / raw",
            iso_vs_raw,
            target="<= 10x",
            met=iso_vs_raw.value <= 10,
            absolute=f"isolated {fmt_stats(m['isolated'])}",
        ),
        Check.ratio(
            "1g",
            "socket JSON-RPC / isolated (isolated faster than socket)",
            socket_vs_iso,
            target=">= 2x",
            met=socket_vs_iso.value >= 2.0,
        ),
        Check.ratio(
            "1h",
            "socket JSON-RPC / isolated with spin-us 0 (no polling before sleeping)",
            m.ratio("socket JSON-RPC", NO_SPIN),
            absolute=f"isolated, spin-us 0 {fmt_stats(m[NO_SPIN])}",
        ),
    ]

    prog_vs_rpc = m.ratio(PROGRAM, "socket JSON-RPC")
    result.checks += [
        Check.ratio(
            "1p",
            "Python socket plugin / socket JSON-RPC (issue 19)",
            prog_vs_rpc,
            target="<= 1.2x",
            met=prog_vs_rpc.value <= 1.2,
            absolute=f"Python socket plugin {fmt_stats(m[PROGRAM])}",
        ),
        Check.ratio(
            "1q",
            "Python socket plugin / isolated native plugin (reported)",
            m.ratio(PROGRAM, "isolated"),
        ),
    ]
    result.checks += _extism_checks(m)
    result.checks += _loaded_checks(loaded)
    restart_checks, restart_details = restart_rows(ctx)
    result.checks += restart_checks

    rows = [
        [
            name,
            fmt_stats(stats),
            f"{m.ratio(name, 'raw').text()}",
            f"{stats.spread_pct():.0f}%",
            str(m.iterations[name]),
        ]
        for name, stats in m.stats.items()
    ]
    result.details += [
        f"Request: {size} bytes of JSON, method `echo` of bench_plugin.c (answers "
        '`{"ok":true,"result":<request>}`, one malloc + memcpy). Per-call time, median '
        "[q1-q3] over the rounds; ratio to raw with the q1-q3 of the per-round ratios.",
        "",
        *table(["candidate", "per call", "/ raw", "IQR / median", "calls per round"], rows),
        *(["", extism_note] if extism_note else []),
        "",
        *breakdown,
        "",
        *iso_breakdown,
        "",
        *hops,
        "",
        *_loaded_table(m, loaded),
        "",
        *restart_details,
    ]
    return result


def _loaded(candidates: dict[str, Candidate], settings: Settings) -> Measured:
    """The same candidates again, with two busy processes taking the cores."""
    # Bounded: the calibration and rounds of compare() take about rounds x candidates x
    # round_seconds (plus warm-up); the processes are killed as soon as it returns.
    budget = 60.0 + 4 * len(candidates) * settings.rounds * settings.round_seconds
    with busy_processes(BUSY_PROCESSES, budget):
        return compare(candidates, settings)


def _extism_checks(m: Measured) -> list[Check]:
    if EXTISM not in m.stats:
        return [
            Check("1i", "Extism / isolated", "not measured", ">= 1.5x", None, "no extism"),
            Check("1j", "Extism / host.call", "not measured", ">= 5x", None, "no extism"),
        ]
    ext_vs_iso = m.ratio(EXTISM, "isolated")
    ext_vs_host = m.ratio(EXTISM, "host.call")
    return [
        Check.ratio(
            "1i",
            "Extism / isolated (isolated faster than a wasm sandbox)",
            ext_vs_iso,
            target=">= 1.5x",
            met=ext_vs_iso.value >= 1.5,
            absolute=f"Extism {fmt_stats(m[EXTISM])}",
        ),
        Check.ratio(
            "1j",
            "Extism / host.call (in-process host faster than Extism)",
            ext_vs_host,
            target=">= 5x",
            met=ext_vs_host.value >= 5.0,
        ),
    ]


def _loaded_checks(loaded: Measured) -> list[Check]:
    iso_vs_raw = loaded.ratio("isolated", "raw")
    socket_vs_iso = loaded.ratio("socket JSON-RPC", "isolated")
    checks = [
        Check.ratio(
            "1k",
            f"loaded ({BUSY_PROCESSES} busy processes): isolated / raw",
            iso_vs_raw,
            target="<= 20x",
            met=iso_vs_raw.value <= 20,
            absolute=f"isolated {fmt_stats(loaded['isolated'])}",
        ),
        Check.ratio(
            "1l",
            f"loaded ({BUSY_PROCESSES} busy processes): socket JSON-RPC / isolated",
            socket_vs_iso,
            target=">= 1.2x",
            met=socket_vs_iso.value >= 1.2,
        ),
    ]
    if EXTISM in loaded.stats:
        ext_vs_iso = loaded.ratio(EXTISM, "isolated")
        checks.append(
            Check.ratio(
                "1m",
                f"loaded ({BUSY_PROCESSES} busy processes): Extism / isolated",
                ext_vs_iso,
                target=">= 1x",
                met=ext_vs_iso.value >= 1.0,
            )
        )
    else:
        checks.append(
            Check("1m", "loaded: Extism / isolated", "not measured", ">= 1x", None, "no extism")
        )
    return checks


def _loaded_table(quiet: Measured, loaded: Measured) -> list[str]:
    rows = [
        [
            name,
            fmt_stats(quiet[name]),
            fmt_stats(loaded[name]),
            quiet.ratio(name, "raw").text(),
            loaded.ratio(name, "raw").text(),
        ]
        for name in quiet.stats
    ]
    return [
        f"Loaded variant: the same candidates measured again while {BUSY_PROCESSES} busy "
        "processes (bench/busy.py) spin on the machine's cores; ratios to raw of the same "
        "run beside the quiet ones.",
        "",
        *table(["candidate", "quiet", "loaded", "quiet / raw", "loaded / raw"], rows),
    ]
