"""Stream races and volume: emits from 8 threads against cancels and closes; many streams, steady.

The 10,000 streams take a few seconds, so CI runs them all; the races run a reduced
load (`make stress` runs STREAM_RACES=1000).
"""

from __future__ import annotations

import gc
import os
import random
import re
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cliproxy_host.host.facade import PluginHost

from ..conftest import CompilePlugin, HostFactory
from .streamutil import settled, stream_host, stream_plugin

STREAMS = int(os.environ.get("STREAM_STREAMS", "10000"))
RACES = int(os.environ.get("STREAM_RACES", "150"))
THREADS = 8
_CHUNK = re.compile(rb"t(\d+)-(\d+)")


@pytest.fixture(params=["inprocess", "process"])
def isolation(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


def _check_order(payloads: list[bytes]) -> None:
    """Each emitting thread's chunks arrive in its order, none twice."""
    last: dict[int, int] = defaultdict(lambda: -1)
    for payload in payloads:
        match = _CHUNK.fullmatch(payload)
        assert match is not None, payload
        thread, index = int(match[1]), int(match[2])
        assert index > last[thread], f"thread {thread}: {index} after {last[thread]}"
        last[thread] = index


def test_emits_from_eight_threads_race_cancels_and_closes(
    compile_plugin: CompilePlugin, host_factory: HostFactory, isolation: str
) -> None:
    rng = random.Random(12)
    runs = RACES if isolation == "inprocess" else max(10, RACES // 5)
    with stream_host(
        host_factory, stream_plugin(compile_plugin), isolation=isolation, timeout_ms=20_000
    ) as host:
        before = settled(host)
        delivered = 0
        for _ in range(runs):
            request = {
                "threads": THREADS,
                "count": rng.randint(1, 40),
                "close_each": rng.randint(0, 1),
            }
            stream = host.call_stream("sp", "executor.execute_stream", request)
            stop_after = rng.randint(0, 60)
            payloads = []
            for chunk in stream:
                assert chunk.error == ""
                payloads.append(chunk.payload)
                if len(payloads) >= stop_after:
                    stream.close()  # the consumer cancels while the threads emit
            _check_order(payloads)
            delivered += len(payloads)
        after = settled(host)
        # Every emit was answered: accepted or refused, never lost, and nothing crashed.
        assert after["emits_ok"] - before["emits_ok"] >= delivered
        assert after["running"] == 0
        assert len(host.scopes) == 0
        assert len(host._streams) == 0


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def _run_streams(host: PluginHost, count: int) -> int:
    """`count` async streams, four at a time, each read to its end; the chunks seen."""

    def one(n: int) -> int:
        request = {"count": 2, "size": 1024} if n % 3 else {"count": 3}
        with host.call_stream("sp", "executor.execute_stream", request) as stream:
            return sum(1 for _ in stream)

    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(one, range(count)))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds through /proc")
def test_many_streams_leave_fds_threads_and_memory_steady(
    compile_plugin: CompilePlugin, host_factory: HostFactory
) -> None:
    with stream_host(host_factory, stream_plugin(compile_plugin)) as host:
        _run_streams(host, 200)  # warm up: pools, caches, allocator arenas
        settled(host)
        gc.collect()
        fds, threads, rss = _fds(), _threads(), _rss_kib()
        chunks = _run_streams(host, STREAMS)
        counts = settled(host)
        gc.collect()
        assert chunks == sum(2 if n % 3 else 3 for n in range(STREAMS))
        assert counts["emits_failed"] == 0
        assert len(host.scopes) == 0
        assert len(host._streams) == 0
        assert _fds() <= fds + 2
        # Pool threads retire after being idle; the plugin's emitters have all exited.
        assert _threads() <= threads + 4
        assert _rss_kib() - rss < 20 * 1024, "RSS grew by more than 20 MiB"
    assert threading.active_count() < 50
