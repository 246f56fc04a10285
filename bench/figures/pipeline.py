"""Figure 8: host.execute through the model pipeline against one direct executor call.

Three plugins, all pass-through and in-process: two request interceptors (each answers
{} to request.intercept_before and request.intercept_after, so four interceptor calls
per request) and an executor that hands its Payload back. The pipeline's cost is those
five plugin calls plus its own work (route lookup, executor choice, base64, headers).

  execute   host.execute(ModelRequest) with the interceptors and the executor loaded
  direct    host.call("ex", "executor.execute", <the request the pipeline sends>)
  floor     the same five plugin calls made directly, one host.call each, with the
            requests the pipeline sends: what host.execute costs with no pipeline work,
            so host.execute / floor is the pipeline's own share
  bare      the same five calls through bare cffi (the raw baseline), no host at all
"""

from __future__ import annotations

import time

from bench import build
from bench.baselines.raw import RawPlugin
from bench.figures.common import Check, Context, FigureResult, loaded_host, table
from bench.harness import compare, fmt_stats
from cliproxy_host.envelope import b64encode
from cliproxy_host.pipeline import ModelRequest

TITLE = "Model pipeline: host.execute (2 interceptors + executor) vs host.call"

BODY = b'{"model":"gpt-bench","messages":[{"role":"user","content":"hello plugin"}]}'


def run(ctx: Context) -> FigureResult:
    result = FigureResult(8, TITLE)
    interceptor = build.pipeline_plugin(interceptor=True)
    plugins = {
        "i1": interceptor,
        "i2": build.copy_library(interceptor, ctx.workdir / "libs" / "fig8-i2.so"),
        "ex": build.pipeline_plugin(interceptor=False),
    }
    request = ModelRequest(model="gpt-bench", body=BODY)
    with loaded_host(ctx, "fig8", plugins) as host:
        answer = host.execute(request)
        if answer.body != BODY or answer.executor != "ex":
            raise RuntimeError(f"the pipeline did not pass the body through: {answer}")
        direct_request = {
            "Model": "gpt-bench",
            "Format": "openai",
            "Stream": False,
            "Alt": "",
            "Headers": {},
            "Query": {},
            "OriginalRequest": "",
            "SourceFormat": "openai",
            "Payload": "",
            "Metadata": {},
        }

        body = b64encode(BODY)

        def intercept(to_format: str) -> dict[str, object]:
            return {
                "RequestID": "req-1",
                "SourceFormat": "openai",
                "ToFormat": to_format,
                "Model": "gpt-bench",
                "RequestedModel": "gpt-bench",
                "Stream": False,
                "Metadata": {},
                "Headers": {},
                "Body": body,
            }

        floor_calls = [
            ("i1", "request.intercept_before", intercept("")),
            ("i2", "request.intercept_before", intercept("")),
            ("i1", "request.intercept_after", intercept("openai")),
            ("i2", "request.intercept_after", intercept("openai")),
            (
                "ex",
                "executor.execute",
                {**direct_request, "OriginalRequest": body, "Payload": body},
            ),
        ]

        def execute(n: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(n):
                host.execute(request)
            return time.perf_counter_ns() - start

        def direct(n: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(n):
                host.call("ex", "executor.execute", direct_request)
            return time.perf_counter_ns() - start

        def floor(n: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(n):
                for plugin_id, method, req in floor_calls:
                    host.call(plugin_id, method, req)
            return time.perf_counter_ns() - start

        # The same five calls with no host at all: bare cffi on private copies of the
        # libraries (raw baseline), orjson both ways. What any host's five calls cost.
        raws = {
            pid: RawPlugin(build.copy_library(lib, ctx.workdir / "libs" / f"fig8-raw-{pid}.so"))
            for pid, lib in plugins.items()
        }
        buffer = RawPlugin.new_buffer()
        raw_calls = [(raws[pid], method.encode(), req) for pid, method, req in floor_calls]
        for raw, method, req in raw_calls:
            raw.call(method, req, buffer)

        def bare(n: int) -> int:
            start = time.perf_counter_ns()
            for _ in range(n):
                for raw, method, req in raw_calls:
                    raw.call(method, req, buffer)
            return time.perf_counter_ns() - start

        try:
            m = compare(
                {
                    "host.execute": execute,
                    "host.call": direct,
                    "5 x host.call": floor,
                    "5 x raw cffi": bare,
                },
                ctx.settings,
            )
        finally:
            for raw in raws.values():
                raw.close()
    ratio = m.ratio("host.execute", "host.call")
    result.checks.append(
        Check.ratio(
            "8a",
            "host.execute (2 pass-through interceptors + executor) / host.call of the executor",
            ratio,
            target="<= 2x",
            met=ratio.value <= 2.0,
            absolute=f"execute {fmt_stats(m['host.execute'])}; call {fmt_stats(m['host.call'])}",
        )
    )
    floor_ratio = m.ratio("5 x host.call", "host.call")
    result.checks.append(
        Check.ratio(
            "8b",
            "the floor by calls: the same 5 plugin calls made directly / 1 host.call",
            floor_ratio,
            absolute=f"5 calls {fmt_stats(m['5 x host.call'])}",
        )
    )
    bare_ratio = m.ratio("5 x raw cffi", "host.call")
    result.checks.append(
        Check.ratio(
            "8d",
            "the floor of any host: the same 5 calls through bare cffi / 1 host.call",
            bare_ratio,
            absolute=f"5 bare calls {fmt_stats(m['5 x raw cffi'])}",
        )
    )
    own = m.ratio("host.execute", "5 x host.call")
    result.checks.append(
        Check.ratio(
            "8c",
            "host.execute / the same 5 plugin calls made directly (the pipeline's own work)",
            own,
            target="<= 1.5x",
            met=own.value <= 1.5,
        )
    )
    rows = [[name, fmt_stats(stats), str(m.iterations[name])] for name, stats in m.stats.items()]
    result.details += [
        "One request through the pipeline makes five plugin calls (two interceptors, each "
        "before and after the executor is chosen, then the executor); the direct call "
        "makes one. 8b is that floor (the five calls made directly, with the requests the "
        "pipeline sends); 8c is what the pipeline's own work adds on top of it; 8d is the "
        "floor of any host, the five calls through bare cffi with no host in between: "
        "when it is over 2x, no host can meet 8a's <= 2x on this path.",
        "",
        *table(["candidate", "per request", "n per round"], rows),
    ]
    return result
