"""RESULTS.md: the machine, the method, the summary table and each figure's details."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import cliproxy_host
from bench.figures.common import Check, FigureResult, table


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """1, 5 and 15 minute load averages: other work on the machine shows here."""
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_info() -> dict[str, str]:
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "cffi": _version("cffi"),
        "orjson": _version("orjson"),
        "cliproxy_host": str(Path(cliproxy_host.__file__).resolve().parent),
        "load average at start": load_average(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def summary_rows(results: Sequence[FigureResult]) -> list[list[str]]:
    rows = []
    for fig in results:
        for check in fig.checks:
            rows.append(
                [
                    check.key,
                    check.label,
                    check.measured,
                    check.target,
                    f"**{check.verdict}**" if check.verdict == "MISSED" else check.verdict,
                    check.absolute,
                ]
            )
    return rows


METHOD = (
    "Every figure is a ratio against a baseline measured in the same run, on the same "
    "machine, with the candidates interleaved round by round (the order rotates). A round "
    "runs one candidate for a calibrated number of operations (about 0.08 s), 21 rounds by "
    "default. A figure's value is the median of the per-round ratios, with their "
    "interquartile range in brackets, and the ratio of the medians beside it: the "
    "candidates of one round run back to back, so each pair shares the machine's state of "
    "the moment, and on a shared machine (2 cores, other people's test runs) the paired "
    "value is the one that holds still; on a quiet machine the two agree. The paired "
    "value is the one judged against the target. Times are printed as median [q1-q3]. "
    "Absolute times are printed beside the ratios but are not the claim: they depend on "
    "the machine. Cyclic GC is paused inside timed loops (for every "
    "candidate alike). Timer: time.perf_counter_ns; C-side timings use "
    "clock_gettime(CLOCK_MONOTONIC)."
)

BASELINES = (
    "Baselines (bench/baselines/): **raw** = the same C function called through a bare "
    "cffi function pointer with the same bytes, orjson.dumps of the request and "
    "orjson.loads of the answer in place, free_buffer; **ctypes** = a straightforward "
    "hand-written ctypes loader with the stdlib json module (and an informational "
    "ctypes+orjson variant); **socket JSON-RPC** = the same envelope sent as JSON-RPC 2.0 "
    "(newline-framed) over a Unix socket to a separate process that hosts the plugin with "
    "NativePlugin. Each candidate loads its own copy of the plugin file, so plugin globals "
    "(the host API pointer) are never shared."
)


def render(
    results: Sequence[FigureResult],
    machine: dict[str, str],
    *,
    command: str,
    quick: bool,
    seconds: float,
    errors: dict[int, str],
    comparison: list[str] | None = None,
) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {machine['date']} "
        f"({'quick smoke mode: numbers are only indicative' if quick else 'full run'}, "
        f"{seconds:.0f} s).",
        "",
        "## Machine",
        "",
        *table(["", ""], [[k, v] for k, v in machine.items() if k != "date"]),
        "",
        "## Method",
        "",
        METHOD,
        "",
        BASELINES,
        "",
        "## Summary",
        "",
        *table(
            ["#", "figure", "measured: median (spread)", "target", "verdict", "absolute"],
            summary_rows(results),
        ),
        "",
    ]
    missed = [c for fig in results for c in fig.checks if c.verdict == "MISSED"]
    if missed:
        lines += [
            "Missed: " + ", ".join(f"{c.key} ({c.label}: {c.measured})" for c in missed) + ". "
            "See the figures below for where the time goes.",
            "",
        ]
    for number, message in errors.items():
        lines += [f"Figure {number} failed to run: `{message}`", ""]
    for fig in results:
        lines += [f"## Figure {fig.number}: {fig.title}", "", *fig.details, ""]
        lines += [f"({fig.seconds:.1f} s)", ""]
    if comparison:
        lines += comparison
    return "\n".join(lines).rstrip() + "\n"


def to_json(results: Sequence[FigureResult], machine: dict[str, str]) -> dict[str, Any]:
    return {
        "machine": machine,
        "checks": [_check_json(c) for fig in results for c in fig.checks],
        "details": {str(fig.number): fig.details for fig in results},
    }


def _check_json(check: Check) -> dict[str, Any]:
    return {
        "key": check.key,
        "label": check.label,
        "measured": check.measured,
        "target": check.target,
        "verdict": check.verdict,
        "absolute": check.absolute,
        "value": check.value,
    }


def comparison_section(
    before: Sequence[FigureResult], after: dict[str, Any], tree: Path, note: str | None
) -> list[str]:
    """Before (this run's cliproxy_host) / after (the patched tree) for each check."""
    after_checks = {c["key"]: c for c in after["checks"]}
    rows = []
    for fig in before:
        for check in fig.checks:
            other = after_checks.get(check.key)
            if other is None:
                continue
            rows.append(
                [
                    check.key,
                    check.label,
                    check.measured,
                    other["measured"],
                    check.target,
                    f"{check.verdict} -> {other['verdict']}",
                ]
            )
    lines = [
        "## Before / after: proposed call-path changes",
        "",
        f"Before: this run's cliproxy_host. After: the same figures re-run in a separate "
        f"process with `PYTHONPATH={tree}` (a patched copy of cliproxy_host: "
        f"`{after['machine']['cliproxy_host']}`), right after this run on the same machine. "
        "Each value is a ratio against a baseline measured in its own run.",
        "",
    ]
    if note:
        lines += [note, ""]
    lines += [*table(["#", "figure", "before", "after", "target", "verdict"], rows), ""]
    # The after-run's own call-path breakdown, to read beside figure 1's.
    details = after.get("details", {}).get("1", [])
    start = next((i for i, line in enumerate(details) if line.startswith("Where the time")), None)
    if start is not None:
        lines += ["After (patched):", "", *details[start + 2 :], ""]
    return lines
