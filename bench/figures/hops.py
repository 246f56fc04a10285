"""The socket wire's hops, timed one call at a time: the isolated path where no C compiler
built the native core (there, Python serves the lines on their sockets; with the core,
frames travel in rings, figures/breakdown.py times that path by layers).

An out-of-band harness: a worker of its own (bench/hops_worker.py) and this host end
drive the isolated mode's wire functions step by step on a socketpair, stamping each
step with CLOCK_MONOTONIC (shared by both processes), so the real client and worker carry
no timing code. Hops:

  host send        pack_call + send_frame(CALL)
  worker wake-up   from the host's send returning to the worker's read returning
                   (negative when the worker ran before the sender's syscall returned)
  worker decode    read_frame + unpack_call, from the worker's buffer
  plugin           NativePlugin.call (cffi, the C echo, copy of the answer)
  worker reply     send_frame(RESULT)
  host wake-up     from the worker's send returning to the host's read returning
  decode           read_frame + envelope.decode
"""

from __future__ import annotations

import io
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import orjson

from bench.figures.common import table
from bench.harness import fmt_ns
from bench.hops_worker import TRACE
from cliproxy_host.backends.isolated.wire import (
    LINE_BUFFER,
    Kind,
    pack_call,
    read_frame,
    send_frame,
    spin_until_readable,
)
from cliproxy_host.envelope import decode

REPO = Path(__file__).resolve().parents[2]
HOPS = (
    "host send",
    "worker wake-up",
    "worker decode",
    "plugin",
    "worker reply",
    "host wake-up",
    "decode",
)
_START_TIMEOUT_S = 30.0


def measure_hops(lib: Path, request: Any, *, calls: int, spin_us: int) -> dict[str, float]:
    """Median ns of each hop and of the whole call over `calls` calls (after a warm-up)."""
    host_sock, worker_sock = socket.socketpair()
    env = dict(os.environ)
    # PYTHONPATH first (--compare-tree substitutes cliproxy_host there), then the repo.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO)) if p)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.hops_worker",
            "--fd",
            str(worker_sock.fileno()),
            "--path",
            str(lib),
            "--spin-us",
            str(spin_us),
        ],
        pass_fds=(worker_sock.fileno(),),
        env=env,
    )
    worker_sock.close()
    try:
        host_sock.settimeout(_START_TIMEOUT_S)  # bounds every step: a stuck worker fails
        return _drive(host_sock, request, calls=calls, spin_us=spin_us)
    finally:
        host_sock.close()  # EOF: the worker exits
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _drive(sock: socket.socket, request: Any, *, calls: int, spin_us: int) -> dict[str, float]:
    file = cast(io.BufferedReader, sock.makefile("rb", buffering=LINE_BUFFER))
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    spin = spin_us / 1e6
    data = orjson.dumps(request)
    clock = time.perf_counter_ns
    samples: dict[str, list[int]] = {name: [] for name in (*HOPS, "total")}
    warmup = max(20, calls // 10)
    for i in range(warmup + calls):
        t0 = clock()
        send_frame(sock, Kind.CALL, i + 1, pack_call("echo", data))
        t1 = clock()
        if spin:
            spin_until_readable(poller, spin)
        if not file.peek(1):
            raise RuntimeError("the hops worker closed its socket (see its stderr above)")
        t2 = clock()
        frame = read_frame(file, None)
        if frame is None or frame[0] is not Kind.RESULT:
            raise RuntimeError(f"the hops worker answered {frame!r}, not a RESULT")
        answer = decode(frame[2], plugin_id="hops", method="echo")
        t3 = clock()
        trace = read_frame(file, None)
        if trace is None or trace[0] is not Kind.PONG:
            raise RuntimeError(f"the hops worker sent {trace!r}, not its trace")
        if answer != request:
            raise RuntimeError("the hops worker's echo did not answer the request back")
        if i < warmup:
            continue
        woken, decoded, answered, sent = TRACE.unpack(trace[2])
        for name, ns in zip(
            (*HOPS, "total"),
            (
                t1 - t0,
                woken - t1,
                decoded - woken,
                answered - decoded,
                sent - answered,
                t2 - sent,
                t3 - t2,
                t3 - t0,
            ),
            strict=True,
        ):
            samples[name].append(ns)
    return {name: float(statistics.median(values)) for name, values in samples.items()}


def hop_table(
    lib: Path, request: Any, *, calls: int, spin_us: int, isolated_ns: float
) -> list[str]:
    """Figure 1's per-hop table: spin-us 0 and spin-us `spin_us` side by side."""
    try:
        sleeping = measure_hops(lib, request, calls=calls, spin_us=0)
        spinning = measure_hops(lib, request, calls=calls, spin_us=spin_us)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return [f"Per-hop breakdown of an isolated call unavailable ({type(exc).__name__}: {exc})."]
    rows = [
        [
            name,
            fmt_ns(sleeping[name]),
            f"{sleeping[name] / sleeping['total']:.0%}",
            fmt_ns(spinning[name]),
            f"{spinning[name] / spinning['total']:.0%}",
        ]
        for name in HOPS
    ]
    rows.append(
        ["one call, total", fmt_ns(sleeping["total"]), "100%", fmt_ns(spinning["total"]), "100%"]
    )
    return [
        f"The socket wire's hops, the path of Python-served lines where no C compiler built "
        f"the native core (driven step by step by bench/figures/hops.py and "
        f"bench/hops_worker.py, one call at a time, medians over {calls} calls; the hops' "
        f"medians need not add up to the total's). For scale, the full isolated host.call "
        f"above (native core, rings): {fmt_ns(isolated_ns)}.",
        "",
        *table(
            ["hop", "spin-us 0", "share", f"spin-us {spin_us}", "share"],
            rows,
        ),
    ]
