"""Figure 3: throughput of a CPU-bound plugin method with 2 threads against 1.

bench_plugin.c's `spin` burns `us` microseconds of CPU in C. If the host holds the GIL
during the call, two threads take turns and the throughput stays at 1x; if it releases
it, two threads on two cores get close to 2x. The same n calls are made by 1 thread, or
split across 2 threads (wall time from a common start to the last finish). The same for
the plugin in a worker process (isolation: process): two calls in flight there run on
two line threads of the worker, and the callers wait without holding the GIL. Its
ceiling is two C processes doing the same over shared memory (bench/baselines/pingpong.c:
no Python, no JSON, and the same rule for polling or sleeping). And the same calls from
two host processes of one caller each (bench/caller_process.py), each with a worker of
its own: what the isolated path reaches when the two callers share no interpreter.

The isolated candidates are metered: the CPU time this process and the plugin's workers
took per call (3h). With both CPUs taken by two 50 us calls, everything else a call costs
(the callers' Python, the switches to and from the worker, the worker's side of the
exchange) comes out of the same two CPUs, so 3d can reach at most about
2 x (1-thread time per call) / (50 us + that overhead per call): 3h prints that bound.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import build
from bench.baselines.raw import RawPlugin
from bench.build import REPO
from bench.figures.common import Check, Context, FigureResult, loaded_host, table
from bench.harness import Candidate, Ratio, Stats, compare, fmt_stats

TITLE = "Threads: ~50 us CPU-bound method, 2 threads vs 1 (GIL released?)"

PID = "bench"
SPIN_US = 50
TARGET = 1.7


def _threaded(make_call: Callable[[], Callable[[], Any]], threads: int) -> Candidate:
    """run(n): n calls split across `threads` threads; answers the wall time."""

    def run(n: int) -> int:
        shares = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
        barrier = threading.Barrier(threads + 1)
        done: list[int] = []

        def work(count: int) -> None:
            call = make_call()
            barrier.wait()
            for _ in range(count):
                call()
            done.append(time.perf_counter_ns())

        workers = [threading.Thread(target=work, args=(s,)) for s in shares]
        for w in workers:
            w.start()
        barrier.wait()
        start = time.perf_counter_ns()
        for w in workers:
            w.join()
        return max(done) - start

    return run


def _own_cpu_s() -> float:
    """CPU seconds this process took so far, its threads that ended included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_WORKER_MODULE = b"cliproxy_host.backends.isolated.worker"


def _workers_cpu_s() -> float:
    """CPU seconds the threads of the isolated workers among this process's children have
    run so far (/proc schedstat, in ns: clock ticks are too coarse for a quick run; a
    worker's call lines outlive the figure, so no thread of theirs ends in between)."""
    total_ns = 0
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                if _WORKER_MODULE not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
                    total_ns += int(stat.read_text().split()[0])
            except OSError:  # it ended in between
                continue
    return total_ns / 1e9


class _Metered:
    """A candidate whose runs are metered: the CPU time this process and the isolated
    workers took in each, with the number of calls."""

    def __init__(self, run: Candidate) -> None:
        self._run = run
        self.runs: list[tuple[int, float, float]] = []  # (calls, host s, workers s)

    def __call__(self, n: int) -> int:
        host, workers = _own_cpu_s(), _workers_cpu_s()
        elapsed = self._run(n)
        self.runs.append((n, _own_cpu_s() - host, _workers_cpu_s() - workers))
        return elapsed

    def per_call(self, rounds: int) -> tuple[float, float]:
        """Host and workers' CPU seconds per call over the last `rounds` runs (the timed
        ones; calibration and warm-up come first)."""
        timed = self.runs[-rounds:]
        calls = sum(n for n, _, _ in timed) or 1
        return sum(h for _, h, _ in timed) / calls, sum(w for _, _, w in timed) / calls


def _pingpong(program: Path, threads: int) -> Candidate:
    """run(n): n calls of `spin` {"us": SPIN_US} from `threads` threads into another process,
    in C (bench/baselines/pingpong.c); answers the wall time it measured."""

    def run(n: int) -> int:
        args = [str(program), str(threads), str(SPIN_US), str(n)]
        # bounded: a call takes SPIN_US and change, even on a machine 100x slower
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=30 + n * 0.01, check=True
        )
        return int(done.stdout)

    return run


class _CallerProcesses:
    """Host processes (bench/caller_process.py) loaded from one config, each calling when
    told to: run(n) splits n calls across them and answers the wall time from the order
    to the last one's finish."""

    def __init__(self, config: Path, count: int, request: str) -> None:
        command = [
            sys.executable, "-m", "bench.caller_process", "--config", str(config),
            "--plugin", PID, "--method", "spin", "--request", request,
        ]  # fmt: skip
        env = dict(os.environ)
        # PYTHONPATH first (--compare-tree substitutes cliproxy_host there), then the repo.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO)) if p)
        self._procs: list[subprocess.Popen[str]] = []
        try:
            for _ in range(count):
                proc = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
                )
                self._procs.append(proc)
            for proc in self._procs:
                if self._answer(proc) != "ready":
                    raise RuntimeError("a caller process did not start; see its stderr above")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _answer(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"caller process {proc.pid} ended (exit {proc.wait(10)})")
        return line.strip()

    def run(self, n: int) -> int:
        count = len(self._procs)
        shares = [n // count + (1 if i < n % count else 0) for i in range(count)]
        start = time.perf_counter_ns()
        for proc, share in zip(self._procs, shares, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(f"{share}\n")
            proc.stdin.flush()
        return max(int(self._answer(proc)) for proc in self._procs) - start

    def close(self) -> None:
        for proc in self._procs:
            if proc.stdin is not None:
                proc.stdin.close()  # EOF: the process closes its host and exits
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _per_round(one: Stats, two: Stats) -> Stats:
    return Stats(tuple(a / b for a, b in zip(one.samples, two.samples, strict=True)))


def run(ctx: Context) -> FigureResult:
    result = FigureResult(3, TITLE)
    request = {"us": SPIN_US}
    with ExitStack() as stack:
        host = stack.enter_context(loaded_host(ctx, "fig3-host", {PID: ctx.bench_plugin()}))
        iso = stack.enter_context(
            loaded_host(ctx, "fig3-isolated", {PID: ctx.bench_plugin()}, isolation="process")
        )
        raw = RawPlugin(ctx.private_copy("fig3-raw"))
        stack.callback(raw.close)

        def host_call() -> Callable[[], Any]:
            return lambda: host.call(PID, "spin", request)

        def isolated_call() -> Callable[[], Any]:
            return lambda: iso.call(PID, "spin", request)

        def raw_call() -> Callable[[], Any]:
            buffer = raw.new_buffer()  # one response struct per thread
            return lambda: raw.call(b"spin", request, buffer)

        pingpong = build.pingpong()
        config = ctx.host_dir("fig3-isolated").config_path  # what `iso` was loaded from
        processes = _CallerProcesses(config, 2, f'{{"us": {SPIN_US}}}')
        stack.callback(processes.close)
        iso_one = _Metered(_threaded(isolated_call, 1))
        iso_two = _Metered(_threaded(isolated_call, 2))
        candidates = {
            "host.call, 1 thread": _threaded(host_call, 1),
            "host.call, 2 threads": _threaded(host_call, 2),
            "isolated, 1 thread": iso_one,
            "isolated, 2 threads": iso_two,
            "isolated, 2 host processes": processes.run,
            "raw, 1 thread": _threaded(raw_call, 1),
            "raw, 2 threads": _threaded(raw_call, 2),
            "C, two processes, 1 thread": _pingpong(pingpong, 1),
            "C, two processes, 2 threads": _pingpong(pingpong, 2),
        }
        m = compare(candidates, ctx.settings)

    # Throughput ratio = time per call with 1 thread / time per call with 2.
    speedup = m.ratio("host.call, 1 thread", "host.call, 2 threads")
    ceiling = m.ratio("raw, 1 thread", "raw, 2 threads")
    cores = os.cpu_count() or 1
    host_check = Check.ratio(
        "3a",
        "host.call throughput, 2 threads / 1 thread",
        speedup,
        target=f">= {TARGET}x",
        met=speedup.value >= TARGET,
        absolute=(
            f"per call: 1 thread {fmt_stats(m['host.call, 1 thread'])}; "
            f"2 threads {fmt_stats(m['host.call, 2 threads'])}"
        ),
    )
    if not host_check.met and ceiling.value < TARGET:
        host_check.inconclusive = True
        host_check.absolute += (
            f"; inconclusive: raw itself reached only {ceiling.value:.2f}x (another process "
            "was using the second core)"
        )
    iso_speedup = m.ratio("isolated, 1 thread", "isolated, 2 threads")
    iso_check = Check.ratio(
        "3d",
        "isolated throughput, 2 threads / 1 thread (issue 14)",
        iso_speedup,
        target=f">= {TARGET}x",
        met=iso_speedup.value >= TARGET,
        absolute=(
            f"per call: 1 thread {fmt_stats(m['isolated, 1 thread'])}; "
            f"2 threads {fmt_stats(m['isolated, 2 threads'])}"
        ),
    )
    process_ceiling = m.ratio("C, two processes, 1 thread", "C, two processes, 2 threads")
    two_hosts = m.ratio("isolated, 1 thread", "isolated, 2 host processes")
    if not iso_check.met and process_ceiling.value < TARGET:
        iso_check.inconclusive = True
        iso_check.absolute += (
            f"; inconclusive: two C processes themselves reached only "
            f"{process_ceiling.value:.2f}x (3e)"
        )
    # How much of the machine's ceiling the host reaches, round by round: holds still
    # when other processes take a core now and then.
    host_speedups = _per_round(m["host.call, 1 thread"], m["host.call, 2 threads"])
    raw_speedups = _per_round(m["raw, 1 thread"], m["raw, 2 threads"])
    iso_speedups = _per_round(m["isolated, 1 thread"], m["isolated, 2 threads"])
    process_speedups = _per_round(m["C, two processes, 1 thread"], m["C, two processes, 2 threads"])
    rounds = len(m["isolated, 2 threads"].samples)
    cpu_one, cpu_two = iso_one.per_call(rounds), iso_two.per_call(rounds)
    overhead_s = sum(cpu_two) - SPIN_US / 1e6  # what a call costs the two CPUs beyond its spin
    bound = 2 * m["isolated, 1 thread"].median / 1e9 / (SPIN_US / 1e6 + max(overhead_s, 0.0))
    cpu_check = Check(
        "3h",
        f"CPU per isolated call beyond the {SPIN_US} us spin, 2 threads; the bound it sets "
        "on 3d (informational)",
        f"{overhead_s * 1e6:.1f} us; bound {bound:.2f}x",
        absolute=(
            f"host {cpu_two[0] * 1e6:.1f} us + worker {cpu_two[1] * 1e6:.1f} us per call "
            f"(1 thread, polling while a CPU is spare: host {cpu_one[0] * 1e6:.1f} us + worker "
            f"{cpu_one[1] * 1e6:.1f} us)"
        ),
        value=overhead_s * 1e6,
    )
    result.checks += [
        host_check,
        Check.ratio(
            "3b",
            "raw throughput, 2 threads / 1 thread (the machine's ceiling, informational)",
            ceiling,
        ),
        Check.ratio(
            "3c",
            "host speedup / raw speedup, per round (1.0: the host scales like bare cffi)",
            Ratio.of(host_speedups, raw_speedups),
        ),
        iso_check,
        Check.ratio(
            "3e",
            "C two processes throughput, 2 threads / 1 thread (the ceiling for 3d, informational)",
            process_ceiling,
        ),
        Check.ratio(
            "3f",
            "isolated speedup / C two-process speedup, per round (1.0: as fast as C can)",
            Ratio.of(iso_speedups, process_speedups),
        ),
        Check.ratio(
            "3g",
            "isolated throughput, 2 host processes of 1 caller each / 1 thread (informational)",
            two_hosts,
            absolute=f"per call: {fmt_stats(m['isolated, 2 host processes'])}",
        ),
        cpu_check,
    ]
    rows = [
        [name, fmt_stats(stats), f"{1e9 / stats.median:,.0f}/s", str(m.iterations[name])]
        for name, stats in m.stats.items()
    ]
    result.details += [
        f'`spin` {{"us": {SPIN_US}}} burns {SPIN_US} us of CPU in C. {cores} CPU core(s). '
        "Wall time per call (n calls per round, split across the threads).",
        "",
        *table(["candidate", "wall time per call", "throughput", "calls per round"], rows),
    ]
    return result
