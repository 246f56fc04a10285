"""Figure 8: host.execute through the model pipeline against one direct executor call.

Three plugins, all pass-through and in-process: two request interceptors (each answers
{} to request.intercept_before and request.intercept_after, so four interceptor calls
per request) and an executor that hands its Payload back. The pipeline's cost is those
five plugin calls plus its own work (route lookup, executor choice, base64, headers).

  execute   host.execute(ModelRequest) with the interceptors and the executor loaded
  direct    host.call("ex", "executor.execute", <the request the pipeline sends>)
"""

from __future__ import annotations

import time

from bench import build
from bench.figures.common import Check, Context, FigureResult, loaded_host, table
from bench.harness import compare, fmt_stats
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

        m = compare({"host.execute": execute, "host.call": direct}, ctx.settings)
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
    rows = [[name, fmt_stats(stats), str(m.iterations[name])] for name, stats in m.stats.items()]
    result.details += [
        "One request through the pipeline makes five plugin calls (two interceptors, each "
        "before and after the executor is chosen, then the executor); the direct call "
        "makes one.",
        "",
        *table(["candidate", "per request", "n per round"], rows),
    ]
    return result
