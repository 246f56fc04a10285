"""Figure 5: start-up with many plugins: discovered, loaded and registered.

N copies of the simple-c example (compiled once with cc) under distinct IDs in one
plugins dir, all enabled in the YAML config.

  host  PluginHost.from_config(config.yaml): parse the config, discover, dlopen, init and
        plugin.register every plugin (the host loads them on parallel threads)
  raw   the floor: for each file in turn, dlopen + init + plugin.register (the same
        request bytes) + orjson.loads with the raw cffi baseline; no config, no discovery

Each round starts cold for the host objects and unloads everything afterwards (untimed).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import orjson

from bench import build
from bench.baselines.raw import RawPlugin
from bench.figures.common import Check, Context, FigureResult, table
from bench.harness import Ratio, Stats, fmt_ns, fmt_stats, gc_paused
from cliproxy_host import PluginHost
from cliproxy_host.config.schema import HostConfig
from cliproxy_host.discovery import discover
from cliproxy_host.host.facade import lifecycle_request

TITLE = "Start-up: plugin files discovered, loaded and registered"

FULL_COUNT = 200
QUICK_COUNT = 20
LIMIT_SECONDS = 1.0


def _host_round(config_path: Path, count: int) -> tuple[int, dict[str, int]]:
    phases: dict[str, int] = {}
    start = time.perf_counter_ns()
    host = PluginHost.from_config(config_path)
    total = time.perf_counter_ns() - start
    try:
        registered = sum(1 for info in host.plugins() if info.registered)
        if registered != count:
            errors = {i.id: i.error for i in host.plugins() if not i.registered}
            raise RuntimeError(f"{registered}/{count} plugins registered: {errors}")
    finally:
        host.close()
    # The phases the host goes through, timed on their own (informational).
    t0 = time.perf_counter_ns()
    config = HostConfig.load(config_path)
    t1 = time.perf_counter_ns()
    discover(config.plugins_dir(), {})
    t2 = time.perf_counter_ns()
    phases["config"] = t1 - t0
    phases["discovery"] = t2 - t1
    return total, phases


def _raw_round(files: list[Path], config_yaml: dict[str, bytes]) -> int:
    plugins: list[RawPlugin] = []
    start = time.perf_counter_ns()
    for path in files:
        plugin = RawPlugin(path)
        request = lifecycle_request(config_yaml[path.stem])
        env = orjson.loads(plugin.call_bytes(b"plugin.register", request, plugin.buffer))
        if env.get("ok") is not True:
            raise RuntimeError(f"{path}: register failed: {env}")
        plugins.append(plugin)
    total = time.perf_counter_ns() - start
    for plugin in plugins:
        plugin.call_bytes(b"plugin.shutdown", b"{}", plugin.buffer)
        plugin.close()
    return total


def run(ctx: Context) -> FigureResult:
    count = QUICK_COUNT if ctx.settings.quick else FULL_COUNT
    result = FigureResult(5, f"Start-up: {count} plugin files discovered, loaded and registered")
    library = build.simple_c()
    hd = ctx.host_dir("fig5")
    files = [hd.add(f"startup-{i:03d}", library) for i in range(count)]
    config_path = hd.write_config()
    config = HostConfig.load(config_path)
    config_yaml = {f.stem: config.config_yaml(f.stem) for f in files}

    rounds = 2 if ctx.settings.quick else 7
    host_ns: list[float] = []
    raw_ns: list[float] = []
    phases: dict[str, list[int]] = {"config": [], "discovery": []}
    with gc_paused():
        _host_round(config_path, count)  # warm-up: imports, page cache
        _raw_round(files, config_yaml)
        for r in range(rounds):
            order = ("host", "raw") if r % 2 == 0 else ("raw", "host")
            for name in order:
                if name == "host":
                    total, phase = _host_round(config_path, count)
                    host_ns.append(total)
                    for key, value in phase.items():
                        phases[key].append(value)
                else:
                    raw_ns.append(_raw_round(files, config_yaml))

    host, raw = Stats(tuple(host_ns)), Stats(tuple(raw_ns))
    seconds = host.median / 1e9
    result.checks += [
        Check(
            "5a",
            f"{count} plugins: host start-up total",
            f"{seconds:.3f} s ({host.q1 / 1e9:.3f}-{host.q3 / 1e9:.3f})",
            f"< {LIMIT_SECONDS:g} s" + ("" if count == FULL_COUNT else f" (for {FULL_COUNT})"),
            seconds < LIMIT_SECONDS if count == FULL_COUNT else None,
            f"per plugin {fmt_ns(host.median / count)}; raw floor per plugin "
            f"{fmt_ns(raw.median / count)}",
            seconds,
        ),
        Check.ratio(
            "5b",
            "host start-up / raw dlopen+init+register loop",
            Ratio.of(host, raw),
            absolute=f"raw total {fmt_stats(raw)}",
        ),
    ]
    rows = [
        ["host: from_config (all phases)", fmt_stats(host), fmt_ns(host.median / count)],
        ["  of which: config load", fmt_ns(statistics.median(phases["config"])), ""],
        ["  of which: discovery", fmt_ns(statistics.median(phases["discovery"])), ""],
        ["raw: dlopen + init + register", fmt_stats(raw), fmt_ns(raw.median / count)],
    ]
    result.details += [
        f"{count} copies of examples/c/simple_c.c (cc -O2), IDs startup-000.., all enabled. "
        f"{rounds} rounds; total time median [q1-q3]. The config and discovery phases are "
        "timed again on their own after each round (informational).",
        "",
        *table(["what", "total", "per plugin"], rows),
    ]
    return result
