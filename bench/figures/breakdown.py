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
