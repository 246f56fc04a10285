"""Figure 6: the management API, GET /v0/management/plugins with many plugins loaded.

The server runs in its own process (bench/management_server.py: HostService +
create_app + uvicorn, as `cliproxy-host serve` builds it) on a loopback port, with N
copies of simple-c enabled. The load generator (bench/loadgen.py, keep-alive raw
sockets, one thread per connection) runs in this process.

Baseline: the same server answering GET /bench/ping (`{}` behind the same auth), so the
ratio is what listing the plugins costs on top of the server's fixed cost per request.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import orjson

from bench import build
from bench.figures.common import Check, Context, FigureResult, table
from bench.harness import Ratio, Stats, fmt_ns
from bench.loadgen import LoadResult, get, run_load
from bench.server_process import ServerProcess

TITLE = "Management API: GET /v0/management/plugins, requests/s and p99 latency"

REPO = Path(__file__).resolve().parents[2]
LIST_PATH = "/v0/management/plugins"
PING_PATH = "/bench/ping"
FULL_COUNT = 50
QUICK_COUNT = 5
CONCURRENCY = 4


def run(ctx: Context) -> FigureResult:
    count = QUICK_COUNT if ctx.settings.quick else FULL_COUNT
    result = FigureResult(6, f"Management API: GET {LIST_PATH} with {count} plugins")
    library = build.simple_c()
    hd = ctx.host_dir("fig6")
    for i in range(count):
        hd.add(f"mgmt-{i:03d}", library)
    config = hd.write_config()
    key = secrets.token_urlsafe(24)
    headers = {"Authorization": f"Bearer {key}"}
    seconds = 0.3 if ctx.settings.quick else 2.0
    rounds = 1 if ctx.settings.quick else 3

    # --key=<key> as one argument: a random key may start with "-", which argparse
    # would take for an option.
    server = ServerProcess("bench.management_server", config, f"--key={key}")
    try:
        status, body = get(server.port, LIST_PATH, headers)
        listed = orjson.loads(body) if status == 200 else {}
        registered = sum(1 for p in listed.get("plugins", []) if p.get("registered"))
        if registered != count:
            raise RuntimeError(f"{LIST_PATH}: {status}, {registered}/{count} registered")
        size = len(body)
        for path in (LIST_PATH, PING_PATH):  # warm-up
            run_load(server.port, path, headers, concurrency=CONCURRENCY, seconds=0.2)
        loads: dict[str, list[LoadResult]] = {LIST_PATH: [], PING_PATH: []}
        for r in range(rounds):
            order = (LIST_PATH, PING_PATH) if r % 2 == 0 else (PING_PATH, LIST_PATH)
            for path in order:
                loads[path].append(
                    run_load(server.port, path, headers, concurrency=CONCURRENCY, seconds=seconds)
                )
    finally:
        server.close()

    errors = sum(load.errors for runs in loads.values() for load in runs)
    if errors:
        raise RuntimeError(f"{errors} failed requests under load")
    rps = {p: Stats(tuple(load.rps for load in runs)) for p, runs in loads.items()}
    p99 = {p: Stats(tuple(load.percentile(99) for load in runs)) for p, runs in loads.items()}
    p50 = {p: Stats(tuple(load.percentile(50) for load in runs)) for p, runs in loads.items()}
    rps_ratio = Ratio.of(rps[LIST_PATH], rps[PING_PATH])
    p99_ratio = Ratio.of(p99[LIST_PATH], p99[PING_PATH])
    result.checks += [
        Check(
            "6a",
            f"requests/s, list of {count} plugins (ratio to the trivial route)",
            f"{rps[LIST_PATH].median:,.0f}/s ({rps_ratio.text()} of ping)",
            "-",
            None,
            f"ping {rps[PING_PATH].median:,.0f}/s; {CONCURRENCY} keep-alive connections",
            rps[LIST_PATH].median,
        ),
        Check(
            "6b",
            f"p99 latency, list of {count} plugins (ratio to the trivial route)",
            f"{fmt_ns(p99[LIST_PATH].median)} ({p99_ratio.text()} of ping)",
            "-",
            None,
            f"ping p99 {fmt_ns(p99[PING_PATH].median)}",
            p99[LIST_PATH].median,
        ),
    ]
    rows = [
        [
            f"GET {path}",
            f"{rps[path].median:,.0f} [{rps[path].q1:,.0f}-{rps[path].q3:,.0f}]",
            fmt_ns(p50[path].median),
            f"{fmt_ns(p99[path].median)} [{fmt_ns(p99[path].q1)}-{fmt_ns(p99[path].q3)}]",
            str(sum(len(load.latencies_ns) for load in loads[path])),
        ]
        for path in (LIST_PATH, PING_PATH)
    ]
    wrk = shutil.which("wrk")
    generator = "bench/loadgen.py (Python, keep-alive raw sockets)" + (
        "" if wrk else "; wrk is not installed here (`apt-get install wrk` would provide it)"
    )
    result.details += [
        f"Server: its own process, uvicorn + FastAPI, {count} copies of simple-c loaded; "
        f"list response {size:,} bytes. Load: {CONCURRENCY} connections for {seconds:g} s per "
        f"round, {rounds} round(s), routes interleaved; generator: {generator}. The load "
        "generator shares the machine's cores with the server. Baseline: `/bench/ping`, a "
        "trivial route added to the same app behind the same auth dependency.",
        "",
        *table(["route", "requests/s", "p50", "p99", "requests"], rows),
    ]
    return result
