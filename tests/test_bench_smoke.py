"""Smoke test of the benchmarks: `bench/run.py --quick` runs every figure and reports it.

Targets are not asserted: timing on a shared CI machine is too noisy for that. This only
proves that the benchmarks still run against the current code and write every row.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .replica.postgres import find_bin

REPO = Path(__file__).resolve().parent.parent


def test_quick_benchmark_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    data = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--quick",
            "--out",
            str(out),
            "--json",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    text = out.read_text(encoding="utf-8")
    for heading in ("## Machine", "## Method", "## Summary"):
        assert heading in text
    for number in range(1, 12):
        assert f"## Figure {number}:" in text
    rows = set(re.findall(r"^\| (\d+[a-z]) \|", text, flags=re.M))
    expected = {"1a", "1b", "1c", "1d", "1e", "1f", "1g", "2a", "2b", "3a", "3b", "3c"}
    # issue 14: the Extism peer, the loaded variant, host calls from a plugin's own thread
    expected |= {"1i", "1j", "1k", "1l", "1m", "2d"}
    expected.add("1n")  # issue 14: a worker restart / a bare spawn
    expected.add("3d")  # issue 14: isolated calls, 2 threads / 1 thread
    expected |= {"3e", "3f", "3g"}  # its ceilings: C processes, and two host processes
    expected.add("3h")  # and the CPU each call costs beyond the plugin's 50 us
    expected.add("1o")  # issue 16: host.call with metrics on / off
    expected |= {"1p", "1q"}  # issue 19: a Python socket plugin
    expected |= {
        "4a",
        "4b",
        "4c",
        "5a",
        "5b",
        "6a",
        "6b",
        "7a",
        "7b",
        "7c",
        "8a",
        "8b",
        "8c",
        "8d",
        "9a",
        "9b",
    }
    # issue 16: the event bus against a bare queue.Queue hand-off
    expected |= {"10a", "10b", "10c"}
    # issue 18: replicas through PostgreSQL, skipped without PostgreSQL only outside CI
    if find_bin() is not None or os.environ.get("CI") == "true":
        expected |= {"11a", "11b"}
    assert expected <= rows, f"missing rows: {sorted(expected - rows)}"
    assert "ERROR" not in text
    # The CPU meter of figure 3 reads the worker's threads: each call spins ~50 us there.
    worker_us = re.search(r"^\| 3h \|.*worker ([\d.]+) us per call", text, flags=re.M)
    assert worker_us is not None, text
    assert float(worker_us.group(1)) >= 25, text
    # The Extism peer is measured (the test extra brings the bench extra), not skipped.
    assert "not measured" not in text, text
    # Figure 1 prints the per-hop breakdown of an isolated call and the loaded variant.
    figure1 = text.split("## Figure 1:", 1)[1].split("## Figure 2:", 1)[0]
    for hop in ("host send", "worker wake-up", "worker decode", "plugin", "worker reply"):
        assert f"| {hop} |" in figure1, f"no {hop!r} row in figure 1's hop table"
    assert "| host wake-up |" in figure1
    assert "| decode |" in figure1
    assert "| candidate | quiet | loaded | quiet / raw | loaded / raw |" in figure1
    assert "| Extism |" in figure1
