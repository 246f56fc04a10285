"""A host process of its own that calls one plugin when told to (figure 3, 3g).

    python -m bench.caller_process --config PATH --plugin ID --method M --request JSON

Loads the host from the YAML config (so its isolated plugins get workers of their own),
makes a few untimed calls, and prints "ready". Then, for each line "N" on stdin, makes N
calls of the method and prints the CLOCK_MONOTONIC nanosecond time it finished at (one
clock for every process on Linux, so the parent takes the wall time from its own start
to the last finish). An empty line or EOF ends it. Bounded: at most MAX_CALLS per line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from cliproxy_host import PluginHost

WARMUP_CALLS = 200
MAX_CALLS = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.caller_process")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--plugin", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--request", default="{}")
    args = parser.parse_args()
    request = orjson.loads(args.request)
    host = PluginHost.from_config(args.config)
    try:
        info = host.plugin(args.plugin)
        if info is None or not info.registered:
            raise SystemExit(f"plugin {args.plugin} did not load: {info and info.error}")
        call = host.call
        for _ in range(WARMUP_CALLS):
            call(args.plugin, args.method, request)
        print("ready", flush=True)
        for line in sys.stdin:
            if not line.strip():
                break
            n = min(int(line), MAX_CALLS)
            for _ in range(n):
                call(args.plugin, args.method, request)
            print(time.perf_counter_ns(), flush=True)
    finally:
        host.close()


if __name__ == "__main__":
    main()
