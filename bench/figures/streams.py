"""Figure 7: async executor streams: host.stream.emit throughput and time to the first chunk.

tests/plugins/streamplugin.c's `executor.execute_stream` starts a thread of its own that
emits `count` chunks of `size` bytes through host->call("host.stream.emit", ...), then
closes the stream with host.stream.close.

  host   the plugin loaded by PluginHost; PluginHost.call_stream reads the chunks: the
         real path (JSON and base64 decoded, 16-chunk back-pressure, scope, table)
  isolated  the same, the plugin in a worker process (isolation: process): the
         plugin's thread emits on a thread line of its own from its second host call
  raw    a private copy of the same plugin loaded by baselines/raw.py, whose host
         callback is a bare cffi callback that puts the request bytes on a
         queue.Queue(16) (the same bound) and answers a constant envelope; the consumer
         takes `count` items off the queue

Time to first chunk: call_stream of a synchronous answer (one chunk in the answer)
until the first chunk is in hand, against host.call of the same method and request.
The async form (a plugin thread emits the one chunk) is shown beside it.
"""

from __future__ import annotations

import queue
import time
from contextlib import ExitStack
from typing import Any, Final

from bench import build
from bench.baselines.raw import RawPlugin, ffi, libc
from bench.figures.common import Check, Context, FigureResult, loaded_host, table
from bench.harness import Candidate, compare, fmt_stats
from cliproxy_host.host import PluginHost

TITLE = "Async streams: host.stream.emit chunks/s (1 KiB) and time to first chunk"

PID = "sp"
CHUNK = 1024
_OK: Final = b'{"ok":true,"result":{}}'
_CLOSE: Final = object()

# The raw baseline's queue: its cffi callback hands each emit's bytes to it.
_chunks: queue.Queue[object] = queue.Queue(16)


def _queue_host_call(ctx: Any, method: Any, request: Any, request_len: int, response: Any) -> int:
    if ffi.string(method) == b"host.stream.emit":
        _chunks.put(ffi.unpack(ffi.cast("char*", request), request_len))
    else:
        _chunks.put(_CLOSE)
    ptr = libc.malloc(len(_OK))
    ffi.memmove(ptr, _OK, len(_OK))
    response.ptr = ptr
    response.len = len(_OK)
    return 0


# Module-level: it outlives the plugin that holds a pointer to it.
_QUEUE_HOST_CALL: Final = ffi.callback(
    "int(void*, const char*, const uint8_t*, size_t, cliproxy_buffer*)", _queue_host_call
)


def run(ctx: Context) -> FigureResult:
    result = FigureResult(7, TITLE)
    library = build.stream_plugin()
    with ExitStack() as stack:
        host = stack.enter_context(loaded_host(ctx, "fig7-host", {PID: library}))
        iso = stack.enter_context(
            loaded_host(ctx, "fig7-isolated", {PID: library}, isolation="process")
        )
        raw = RawPlugin(build.copy_library(library, ctx.workdir / "libs" / "fig7-raw.so"))
        stack.callback(raw.close)
        # The plugin reads host->call on every call, so the swap takes effect at once.
        raw.host_api.call = _QUEUE_HOST_CALL
        buffer = raw.new_buffer()

        def emit(on: PluginHost) -> Candidate:
            def run(n: int) -> int:
                start = time.perf_counter_ns()
                request = {"count": n, "size": CHUNK}
                got = sum(1 for _ in on.call_stream(PID, "executor.execute_stream", request))
                elapsed = time.perf_counter_ns() - start
                if got != n:
                    raise RuntimeError(f"host stream delivered {got} of {n} chunks")
                return elapsed

            return run

        def raw_emit(n: int) -> int:
            start = time.perf_counter_ns()
            raw.call(
                b"executor.execute_stream", {"stream_id": "1", "count": n, "size": CHUNK}, buffer
            )
            got = 0
            while _chunks.get() is not _CLOSE:
                got += 1
            elapsed = time.perf_counter_ns() - start
            if got != n:
                raise RuntimeError(f"raw queue got {got} of {n} chunks")
            return elapsed

        sync_request = {"mode": "sync", "count": 1}

        def first_chunk_sync(n: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(n):
                with host.call_stream(PID, "executor.execute_stream", sync_request) as stream:
                    next(stream)
            return time.perf_counter_ns() - start

        def plain_call(n: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(n):
                host.call(PID, "executor.execute_stream", sync_request)
            return time.perf_counter_ns() - start

        def first_chunk_async(n: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(n):
                with host.call_stream(PID, "executor.execute_stream", {"count": 1}) as stream:
                    next(stream)
            return time.perf_counter_ns() - start

        candidates: dict[str, Candidate] = {
            "host emit": emit(host),
            "raw queue": raw_emit,
            "isolated emit": emit(iso),
            "first chunk (call_stream)": first_chunk_sync,
            "host.call": plain_call,
            "first chunk (async)": first_chunk_async,
        }
        m = compare(candidates, ctx.settings)

    # Throughput is the inverse of the time per chunk: raw time / host time.
    throughput = m.ratio("raw queue", "host emit")
    first = m.ratio("first chunk (call_stream)", "host.call")
    result.checks += [
        Check.ratio(
            "7a",
            "chunks/s through host.stream.emit (1 KiB) / bare cffi callback to a queue",
            throughput,
            target=">= 0.5x",
            met=throughput.value >= 0.5,
            absolute=f"host {fmt_stats(m['host emit'])}/chunk; raw {fmt_stats(m['raw queue'])}",
        ),
        Check.ratio(
            "7b",
            "time to first chunk: call_stream / host.call of the same method",
            first,
            target="<= 2x",
            met=first.value <= 2.0,
            absolute=f"call_stream {fmt_stats(m['first chunk (call_stream)'])}",
        ),
        Check.ratio(
            "7c",
            "time to first chunk of an async stream (a plugin thread emits) / host.call "
            "(informational)",
            m.ratio("first chunk (async)", "host.call"),
            absolute=f"async {fmt_stats(m['first chunk (async)'])}",
        ),
        Check.ratio(
            "7d",
            "host.stream.emit from an isolated plugin's thread / in-process, per chunk "
            "(informational)",
            m.ratio("isolated emit", "host emit"),
            absolute=f"isolated {fmt_stats(m['isolated emit'])}/chunk",
        ),
    ]
    rows = [
        [name, fmt_stats(stats), f"{stats.spread_pct():.0f}%", str(m.iterations[name])]
        for name, stats in m.stats.items()
    ]
    result.details += [
        "Per chunk for the emit candidates (one stream of n chunks of 1 KiB, emitted by a "
        "plugin thread, read by the caller's thread); per call for the others.",
        "",
        *table(["candidate", "per op", "IQR / median", "n per round"], rows),
    ]
    return result
