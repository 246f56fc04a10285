"""Figure 9: the model endpoints of /v1, through a server of their own process.

The server (bench/gateway_server.py: HostService + create_server + uvicorn, as
`cliproxy-host serve` builds it) runs in its own process on a loopback port.

  9a  POST /v1/chat/completions, non-streamed, through the pipeline to a pass-through
      executor (bench/plugins/pipeline_plugin.c answers the Payload it got), against
      POST /v1/bench/ping of the same server (same key, same body, answers {}), with
      the same bounded loopback generator (bench/loadgen.py): requests/s and p99.
  9b  Streamed: chunks/s a client reads from POST /v1/chat/completions with
      `stream: true` (tests/plugins/chatexec.c emits from a thread of its own), against
      the same plugin's chunks read with no client: host.execute_stream in this process.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import orjson

from bench import build
from bench.figures.common import Check, Context, FigureResult, loaded_host, table
from bench.harness import Ratio, Stats, fmt_ns
from bench.loadgen import LoadResult, get, run_load
from bench.server_process import ServerProcess
from cliproxy_host.pipeline import ModelRequest

TITLE = "Model endpoints: /v1/chat/completions (requests/s, p99) and streamed chunks/s"

REPO = Path(__file__).resolve().parents[2]
CHAT_PATH = "/v1/chat/completions"
PING_PATH = "/v1/bench/ping"
BODY = b'{"model":"gpt-bench","messages":[{"role":"user","content":"hello plugin"}]}'
CONCURRENCY = 4


def _stream_rate(port: int, key: str, chunks: int) -> float:
    """Chunks/s one client reads from a streamed completion of `chunks` deltas."""
    body = {"model": "chat-c-1", "stream": True, "max_tokens": chunks, "messages": []}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as http:
        start = time.perf_counter()
        seen = 0
        with http.stream("POST", CHAT_PATH, json=body) as answer:
            if answer.status_code != 200:
                raise RuntimeError(f"{CHAT_PATH} stream: {answer.status_code} {answer.read()!r}")
            for line in answer.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    seen += 1
        elapsed = time.perf_counter() - start
    if seen != chunks + 1:
        raise RuntimeError(f"{CHAT_PATH} stream: {seen} chunks, expected {chunks + 1}")
    return seen / elapsed


def run(ctx: Context) -> FigureResult:
    quick = ctx.settings.quick
    result = FigureResult(9, TITLE)
    key = secrets.token_urlsafe(24)
    headers = {"Authorization": f"Bearer {key}"}
    seconds = 0.3 if quick else 2.0
    rounds = 1 if quick else 3
    chunks = 200 if quick else 5000

    hd = ctx.host_dir("fig9")
    hd.add("ex", build.pipeline_plugin(interceptor=False))
    hd.add("chat-c", build.chatexec())
    config = hd.write_config(extra={"api-keys": [key]})

    server = ServerProcess("bench.gateway_server", config)
    try:
        status, answer = get(server.port, CHAT_PATH, headers, BODY)
        if status != 200 or answer != BODY:
            raise RuntimeError(f"{CHAT_PATH}: {status} {answer[:200]!r}")
        status, answer = get(server.port, PING_PATH, headers, BODY)
        if status != 200:
            raise RuntimeError(f"{PING_PATH}: {status} {answer[:200]!r}")
        for path in (CHAT_PATH, PING_PATH):  # warm-up
            run_load(server.port, path, headers, concurrency=CONCURRENCY, seconds=0.2, body=BODY)
        loads: dict[str, list[LoadResult]] = {CHAT_PATH: [], PING_PATH: []}
        for r in range(rounds):
            order = (CHAT_PATH, PING_PATH) if r % 2 == 0 else (PING_PATH, CHAT_PATH)
            for path in order:
                loads[path].append(
                    run_load(
                        server.port,
                        path,
                        headers,
                        concurrency=CONCURRENCY,
                        seconds=seconds,
                        body=BODY,
                    )
                )
        _stream_rate(server.port, key, 20)  # warm-up
        served = [_stream_rate(server.port, key, chunks) for _ in range(rounds)]
    finally:
        server.close()

    errors = sum(load.errors for runs in loads.values() for load in runs)
    if errors:
        raise RuntimeError(f"{errors} failed requests under load")

    request = ModelRequest(model="chat-c-1", body=orjson.dumps({"max_tokens": chunks}), stream=True)
    alone: list[float] = []
    with loaded_host(ctx, "fig9-alone", {"chat-c": build.chatexec()}) as host:
        for _ in range(rounds + 1):  # the first round warms up
            start = time.perf_counter()
            seen = sum(1 for _ in host.execute_stream(request))
            alone.append(seen / (time.perf_counter() - start))
    alone = alone[1:]

    rps = {p: Stats(tuple(load.rps for load in runs)) for p, runs in loads.items()}
    p99 = {p: Stats(tuple(load.percentile(99) for load in runs)) for p, runs in loads.items()}
    rps_ratio = Ratio.of(rps[CHAT_PATH], rps[PING_PATH])
    p99_ratio = Ratio.of(p99[CHAT_PATH], p99[PING_PATH])
    stream_ratio = Ratio.of(Stats(tuple(served)), Stats(tuple(alone)))
    result.checks += [
        Check(
            "9a",
            "requests/s, non-streamed completion via a pass-through executor (to a trivial route)",
            f"{rps[CHAT_PATH].median:,.0f}/s ({rps_ratio.text()} of ping)",
            ">= 0.5x",
            rps_ratio.value >= 0.5,
            f"ping {rps[PING_PATH].median:,.0f}/s; p99 {fmt_ns(p99[CHAT_PATH].median)} "
            f"({p99_ratio.text()} of ping's {fmt_ns(p99[PING_PATH].median)})",
            rps[CHAT_PATH].median,
        ),
        Check(
            "9b",
            "streamed chunks/s to a client (to the plugin's emit rate with no client)",
            f"{Stats(tuple(served)).median:,.0f}/s ({stream_ratio.text()})",
            ">= 0.5x",
            stream_ratio.value >= 0.5,
            f"no client {Stats(tuple(alone)).median:,.0f}/s; {chunks} chunks per stream",
            Stats(tuple(served)).median,
        ),
    ]
    rows = [
        [
            f"POST {path}",
            f"{rps[path].median:,.0f} [{rps[path].q1:,.0f}-{rps[path].q3:,.0f}]",
            f"{fmt_ns(p99[path].median)} [{fmt_ns(p99[path].q1)}-{fmt_ns(p99[path].q3)}]",
        ]
        for path in (CHAT_PATH, PING_PATH)
    ]
    result.details += [
        f"Server: its own process (bench/gateway_server.py), uvicorn + FastAPI as `serve` "
        f"builds it. Load: bench/loadgen.py, {CONCURRENCY} keep-alive connections for "
        f"{seconds:g} s per round, {rounds} round(s), routes interleaved, the same "
        f"{len(BODY)}-byte body to both. Streams: one client (httpx) at a time, {chunks} "
        "deltas each; the no-client rate iterates host.execute_stream in this process.",
        "",
        *table(["route", "requests/s", "p99"], rows),
    ]
    return result
