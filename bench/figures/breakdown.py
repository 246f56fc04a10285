"""Where the time of one host.call goes: each layer timed on its own, on live objects.

This reaches into the host's internals (the snapshot record and its backend chain), so
it is informational and degrades to a note when those change shape. Layers:

  host.call          PluginHost.call(plugin_id, method, dict)
  encode             orjson.dumps(dict)
  backend.call       the record's backend (the guard) with the encoded bytes, decoded
  inner backend      what the guard wraps (NativePlugin.call)
  decode             envelope.decode(answer bytes) (part of backend.call)
  FFI floor          the raw baseline's C call + copy of the answer + free_buffer
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.baselines.raw import RawPlugin, ffi
from bench.figures.common import Context, table
from bench.harness import Candidate, compare, fmt_ns
from cliproxy_host import PluginHost
from cliproxy_host.envelope import decode


def _loop(call: Callable[[], Any]) -> Candidate:
    def run(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            call()
        return time.perf_counter_ns() - start

    return run


def call_path_breakdown(
    ctx: Context, host: PluginHost, raw: RawPlugin, plugin_id: str, request: Any
) -> list[str]:
    try:
        record = host._snapshot.get(plugin_id)
        backend = record.backend  # type: ignore[union-attr]
    except Exception as exc:
        return [f"Call-path breakdown unavailable ({type(exc).__name__}: {exc})."]
    inner = getattr(backend, "backend", None)
    data = orjson.dumps(request)
    answer = (inner or backend).call("echo", data)
    buffer = raw.new_buffer()
    fn, free = raw.fn, raw.free

    def floor() -> None:
        fn(b"echo", data, len(data), buffer)
        ptr, length = buffer.ptr, buffer.len
        ffi.buffer(ptr, length)[:]
        free(ptr, length)

    calls: dict[str, Callable[[], Any]] = {
        "host.call": lambda: host.call(plugin_id, "echo", request),
        "encode": lambda: orjson.dumps(request),
        "backend.call": lambda: backend.call("echo", data),
        "decode": lambda: decode(answer, plugin_id=plugin_id, method="echo"),
        "FFI floor": floor,
    }
    if inner is not None:
        calls["inner backend"] = lambda: inner.call("echo", data)
    m = compare({name: _loop(call) for name, call in calls.items()}, ctx.settings)
    med = {name: stats.median for name, stats in m.stats.items()}
    inner_ns = med.get("inner backend", med["backend.call"])
    total = med["host.call"]
    layers = [
        ("encode: orjson.dumps(request)", med["encode"]),
        (
            "host layers: lookup, dispatch, error handling",
            total - med["encode"] - med["backend.call"],
        ),
        ("guard around the backend", med["backend.call"] - inner_ns - med["decode"]),
        (
            "NativePlugin bookkeeping: method bytes, in-flight count, response struct",
            inner_ns - med["FFI floor"],
        ),
        ("FFI floor: C call + copy + free_buffer", med["FFI floor"]),
        ("decode: envelope.decode(answer)", med["decode"]),
    ]
    rows = [["host.call, total", fmt_ns(total), "100%"]]
    rows += [[label, fmt_ns(ns), f"{ns / total:.0%}"] for label, ns in layers]
    return [
        "Where the time of one host.call goes (each layer timed on its own, medians; "
        "the differences are estimates):",
        "",
        *table(["layer", "per call", "share"], rows),
    ]


def isolated_breakdown(ctx: Context, host: PluginHost, plugin_id: str, request: Any) -> list[str]:
    """Where the time of one isolated host.call goes, layer by layer on live objects:
    the host's layers, the guard, the isolated client's bookkeeping (supervisor, worker,
    line), and the exchange on a call line itself (C: the frame into the ring, the worker
    taking it, the plugin, the answer back), driven on a line of the running worker."""
    try:
        backend = host._snapshot.get(plugin_id).backend  # type: ignore[union-attr]
        client = backend.backend  # type: ignore[attr-defined]
        worker = client._supervisor._worker
        line = worker._new_line(None)
    except Exception as exc:
        return [f"Isolated call-path breakdown unavailable ({type(exc).__name__}: {exc})."]
    if line is None:
        return ["Isolated call-path breakdown unavailable (no call line to the worker)."]
    data = orjson.dumps(request)
    spin = client._spin_s
    ids = iter(range(1 << 60, 1 << 61))  # far from the client's own request ids

    def exchange() -> None:
        frame = line.call(next(ids), "echo", data, None, spin)
        if frame is None or frame[0] != 3:  # Kind.RESULT
            raise RuntimeError(f"the worker answered {frame!r}")

    calls: dict[str, Callable[[], Any]] = {
        "host.call": lambda: host.call(plugin_id, "echo", request),
        "backend.call": lambda: backend.call("echo", data),
        "client": lambda: client.call("echo", data),
        "exchange": exchange,
    }
    try:
        m = compare({name: _loop(call) for name, call in calls.items()}, ctx.settings)
    finally:
        line.close()
    med = {name: stats.median for name, stats in m.stats.items()}
    total = med["host.call"]
    layers = [
        ("host layers: encode, lookup, dispatch", total - med["backend.call"]),
        ("guard around the backend, decode", med["backend.call"] - med["client"]),
        (
            "isolated client: supervisor, request id, line checkout and check-in",
            med["client"] - med["exchange"],
        ),
        (
            "line exchange (C): frame into the ring, the worker's turn, plugin, answer back",
            med["exchange"],
        ),
    ]
    rows = [["isolated host.call, total", fmt_ns(total), "100%"]]
    rows += [[label, fmt_ns(ns), f"{ns / total:.0%}"] for label, ns in layers]
    return [
        "Where the time of one isolated host.call goes (each layer timed on its own on the "
        "running worker, medians; the differences are estimates):",
        "",
        *table(["layer", "per call", "share"], rows),
    ]
