"""Figure 11: a change on one replica in force on another, against a bare NOTIFY round trip
on the same database (issue 18's benchmark).

Both replicas are PgConfigStores on one PostgreSQL (initdb in a temp dir, a Unix socket),
each with its PluginHost: a change is `set_enabled` on the first (its transaction, its
NOTIFY) until the second has read the rows again and its host has applied them. The
baseline is one NOTIFY sent on a connection until a LISTENing connection has it.
Without PostgreSQL installed the figure is skipped, except under CI=true (.ci/run installs
it), where that is an error.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Final

import psycopg
from ruamel.yaml import YAML

from bench.figures.common import Check, Context, FigureResult, table
from cliproxy_host import PluginHost
from cliproxy_host.replica import PgConfigStore
from tests.replica.postgres import PostgresServer, find_bin

TITLE = "Replicas: a change on one in force on another vs a bare NOTIFY round trip"

CHANGES: Final = 200
QUICK_CHANGES: Final = 20
TARGET_P99_MS: Final = 1000.0  # the "within 1 s"
_WAIT_S: Final = 5.0


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def _notify_round_trips(dsn: str, count: int) -> list[float]:
    with (
        psycopg.connect(dsn, autocommit=True) as listener,
        psycopg.connect(dsn, autocommit=True) as sender,
    ):
        listener.execute("LISTEN bench_round_trip")
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            sender.execute("NOTIFY bench_round_trip, 'x'")
            got = list(listener.notifies(timeout=_WAIT_S, stop_after=1))
            if not got:
                raise RuntimeError(f"a NOTIFY did not arrive within {_WAIT_S:g} s")
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def _replica(root: Path, dsn: str) -> PgConfigStore:
    (root / "plugins").mkdir(parents=True)
    config = root / "config.yaml"
    with config.open("w", encoding="utf-8") as fh:
        YAML().dump({"plugins": {"dir": "plugins", "configs": {"p": {"enabled": False}}}}, fh)
    return PgConfigStore(config, dsn, state_dir=root / "state")


def _replica_changes(workdir: Path, dsn: str, count: int) -> list[float]:
    one = _replica(workdir / "replica-one", dsn)
    two = _replica(workdir / "replica-two", dsn)
    host = PluginHost(two.config)
    applied = threading.Event()

    def apply() -> None:
        host.apply(two.config)
        applied.set()

    two.start(apply)
    try:
        deadline = time.monotonic() + _WAIT_S
        while not two.status.connected:
            if time.monotonic() > deadline:
                raise RuntimeError("the second replica did not connect")
            time.sleep(0.01)
        samples = []
        for n in range(count):
            applied.clear()
            start = time.perf_counter()
            one.set_enabled("p", n % 2 == 0)
            if not applied.wait(_WAIT_S):
                raise RuntimeError(f"a change was not applied within {_WAIT_S:g} s")
            samples.append((time.perf_counter() - start) * 1000)
        return samples
    finally:
        two.stop()
        host.close()


def run(ctx: Context) -> FigureResult:
    result = FigureResult(11, TITLE)
    bin_dir = find_bin()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
        result.details.append("Skipped: PostgreSQL is not installed (apt-get install postgresql).")
        return result
    count = QUICK_CHANGES if ctx.settings.quick else CHANGES
    server = PostgresServer(bin_dir)
    server.start()
    try:
        dsn = server.create_database("bench_replicas")
        notify = _notify_round_trips(dsn, count)
        change = _replica_changes(ctx.workdir, dsn, count)
    finally:
        try:
            server.stop()
        finally:
            server.remove()
    change_p50, change_p99 = _percentiles(change)
    notify_p50, notify_p99 = _percentiles(notify)
    result.checks.append(
        Check(
            "11a",
            f"a change on one replica in force on another, p50 / p99 over {count}",
            f"{change_p50:.2f} ms / {change_p99:.2f} ms",
            target=f"p99 < {TARGET_P99_MS:g} ms",
            met=change_p99 < TARGET_P99_MS,
            absolute=f"{change_p50 / notify_p50:.1f}x the NOTIFY round trip at p50",
            value=change_p99,
        )
    )
    result.checks.append(
        Check(
            "11b",
            f"bare NOTIFY round trip on the same database, p50 / p99 over {count}",
            f"{notify_p50:.2f} ms / {notify_p99:.2f} ms",
            value=notify_p99,
        )
    )
    result.details += [
        "A change: `set_enabled` on the first replica (a connection, the transaction on the"
        " plugin's versioned row, its NOTIFY) until the second has read the rows again and"
        " its PluginHost has applied them. The baseline: `NOTIFY` on an open connection"
        " until a LISTENing one has it.",
        "",
        *table(
            ["candidate", "p50 (ms)", "p99 (ms)", "samples"],
            [
                ["replica change", f"{change_p50:.2f}", f"{change_p99:.2f}", str(count)],
                ["NOTIFY round trip", f"{notify_p50:.2f}", f"{notify_p99:.2f}", str(count)],
            ],
        ),
    ]
    return result
