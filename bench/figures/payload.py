"""Figure 4: payload sweep, 1 KiB -> 16 MiB echoed through the plugin, time per byte.

A byte payload travels in an envelope as a base64 string (ABI.md section 2), so a round
trip is: base64-encode the payload, host.call("echo", {"data": <b64>}), base64-decode
result["data"]. The host side uses the project's own helpers (envelope.b64encode and
envelope.b64decode, which validates).

  host   the round trip above through PluginHost.call
  raw    the same with the raw cffi baseline (orjson in place, no host machinery)
  bound  memcpy into a fresh buffer + base64 encode + base64 decode of the same bytes:
         what any byte-moving round trip through base64 costs, JSON and FFI aside
"""

from __future__ import annotations

import base64
import importlib
import os
import time
from contextlib import ExitStack
from pathlib import Path

from bench.baselines.raw import RawPlugin
from bench.figures.common import Check, Context, FigureResult, loaded_host, table
from bench.harness import Candidate, Measured, Ratio, compare, fmt_ns
from cliproxy_host.envelope import b64decode, b64encode

TITLE = "Payload sweep 1 KiB -> 16 MiB echo: time per byte vs memcpy + base64 bound"

PID = "bench"
KIB = 1024
MIB = 1024 * KIB
FULL_SIZES = (KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB)
QUICK_SIZES = (KIB, 16 * KIB, 256 * KIB)
# A step whose per-byte cost grows more than this (for a 4x larger payload) is flagged:
# linear work keeps it near 1x; a quadratic step would show about 4x.
STEP_LIMIT = 2.0


def _label(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def run(ctx: Context) -> FigureResult:
    result = FigureResult(4, TITLE)
    sizes = QUICK_SIZES if ctx.settings.quick else FULL_SIZES
    curve: dict[int, Measured] = {}
    with ExitStack() as stack:
        host = stack.enter_context(loaded_host(ctx, "fig4-host", {PID: ctx.bench_plugin()}))
        raw = RawPlugin(ctx.private_copy("fig4-raw"))
        stack.callback(raw.close)
        buffer = raw.new_buffer()
        for size in sizes:
            payload = os.urandom(size)

            def host_rt(n: int, payload: bytes = payload) -> int:
                start = time.perf_counter_ns()
                for _ in range(n):
                    out = host.call(PID, "echo", {"data": b64encode(payload)})
                    b64decode(out["data"], "data")
                return time.perf_counter_ns() - start

            def raw_rt(n: int, payload: bytes = payload) -> int:
                start = time.perf_counter_ns()
                for _ in range(n):
                    out = raw.call(b"echo", {"data": b64encode(payload)}, buffer)
                    base64.b64decode(out["data"])
                return time.perf_counter_ns() - start

            def bound(n: int, payload: bytes = payload) -> int:
                start = time.perf_counter_ns()
                for _ in range(n):
                    copy = bytearray(payload)
                    base64.b64decode(base64.b64encode(copy))
                return time.perf_counter_ns() - start

            check = b64decode(host.call(PID, "echo", {"data": b64encode(payload)})["data"], "d")
            if check != payload:
                raise RuntimeError(f"echo of {size} bytes came back different")
            candidates: dict[str, Candidate] = {"host": host_rt, "raw": raw_rt, "bound": bound}
            # A 16 MiB round trip takes ~0.1 s (one per round): fewer rounds for the large
            # sizes, still enough for a median that page-fault noise does not move.
            rounds = min(ctx.settings.rounds, 15) if size >= MIB else None
            curve[size] = compare(candidates, ctx.settings, rounds=rounds)

    def per_byte(size: int, name: str) -> float:
        return curve[size][name].median / size

    largest = sizes[-1]
    at_largest = curve[largest].ratio("host", "bound")
    # The growth of the host's per-byte cost from one size to the next (4x larger).
    steps = [
        (sizes[i + 1], per_byte(sizes[i + 1], "host") / per_byte(sizes[i], "host"))
        for i in range(len(sizes) - 1)
    ]
    worst_size, worst = max(steps, key=lambda s: s[1]) if steps else (largest, 1.0)
    result.checks += [
        Check.ratio(
            "4a",
            f"host time per byte / bound at {_label(largest)}",
            at_largest,
            target="<= 2x (at 16 MiB)",
            met=at_largest.value <= 2.0 if largest == FULL_SIZES[-1] else None,
            absolute=(
                f"host {per_byte(largest, 'host'):.2f} ns/B, "
                f"raw {per_byte(largest, 'raw'):.2f} ns/B, "
                f"bound {per_byte(largest, 'bound'):.2f} ns/B"
            ),
        ),
        Check(
            "4b",
            "no quadratic step: worst growth of host ns/B between sizes 4x apart",
            f"{worst:.2f}x (at {_label(worst_size)})",
            f"<= {STEP_LIMIT:g}x per step",
            worst <= STEP_LIMIT,
            "every step: " + ", ".join(f"{_label(s)} {g:.2f}x" for s, g in steps),
            worst,
        ),
        Check.ratio(
            "4c",
            f"host / raw at {_label(largest)} (informational: the host's own share)",
            curve[largest].ratio("host", "raw"),
        ),
    ]

    rows = []
    for size in sizes:
        m = curve[size]
        rows.append(
            [
                _label(size),
                fmt_ns(m["host"].median),
                f"{per_byte(size, 'host'):.3f}",
                f"{per_byte(size, 'raw'):.3f}",
                f"{per_byte(size, 'bound'):.3f}",
                Ratio.of(m["host"], m["bound"]).text(),
                Ratio.of(m["host"], m["raw"]).text(),
            ]
        )
    result.details += [
        "Round trip = base64-encode, echo through the plugin, base64-decode. ns/B = "
        "median time per round trip / payload bytes.",
        "",
        *table(
            [
                "payload",
                "host per call",
                "host ns/B",
                "raw ns/B",
                "bound ns/B",
                "host / bound",
                "host / raw",
            ],
            rows,
        ),
    ]
    plot = _plot(ctx.out_dir / "payload.png", sizes, curve)
    result.details += ["", plot]
    return result


def _plot(path: Path, sizes: tuple[int, ...], curve: dict[int, Measured]) -> str:
    try:  # optional: the table above is the curve without it
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "matplotlib is not installed: the curve is the table above (no payload.png)."
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, style in (("host", "o-"), ("raw", "s--"), ("bound", "^:")):
        ax.plot(sizes, [curve[s][name].median / s for s in sizes], style, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticker = importlib.import_module("matplotlib.ticker")
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    ax.set_xticks(list(sizes), [_label(s) for s in sizes], rotation=30)
    ax.set_xlabel("payload")
    ax.set_ylabel("ns per payload byte (median)")
    ax.set_title("echo round trip: time per byte")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"Plot: `{path.name}` (beside this file)."
