"""Calls from many threads while the plugin is hot-reloaded over and over: none lost or crossed.

CI runs a reduced load; `make stress` runs the full one (8 threads x 10,000 calls, 200 reloads).
"""

from __future__ import annotations

import os
import shutil
import threading

from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.host.facade import PluginHost

from ..conftest import CompilePlugin, HostFactory

THREADS = 8
CALLS = int(os.environ.get("STRESS_CALLS", "1500"))
RELOADS = int(os.environ.get("STRESS_RELOADS", "30"))


def test_calls_survive_repeated_hot_reloads(
    compile_plugin: CompilePlugin, host_factory: HostFactory
) -> None:
    library = compile_plugin(TP_WITH_SHUTDOWN=True)
    host_factory.add("tp", library, version="1.0.0")
    host_factory.write_config(configs={"tp": {"enabled": True}})
    failures: list[BaseException] = []
    done = [0] * THREADS
    reloads = [0]
    reloaded = threading.Event()

    with PluginHost.from_config(host_factory.config_path) as host:

        def caller(n: int) -> None:
            # At least CALLS calls, and on until the last reload is done, so every reload
            # happens under load.
            try:
                i = 0
                while i < CALLS or not reloaded.is_set():
                    request = {"thread": n, "call": i}
                    answer = host.call("tp", "echo", request)
                    assert answer == request, f"misrouted: sent {request}, got {answer}"
                    done[n] += 1
                    i += 1
            except BaseException as exc:
                failures.append(exc)
                reloaded.set()

        def reloader() -> None:
            try:
                for r in range(1, RELOADS + 1):
                    if failures:
                        return
                    dest = host_factory.arch_dir / f"tp-v1.0.{r}{LIBRARY_SUFFIX}"
                    tmp = dest.with_name(f".{dest.name}.tmp")
                    shutil.copyfile(library, tmp)
                    tmp.replace(dest)
                    host.apply()
                    info = host.plugins()[0]
                    assert info.version == f"1.0.{r}", info
                    reloads[0] += 1
            except BaseException as exc:
                failures.append(exc)
            finally:
                reloaded.set()

        callers = [threading.Thread(target=caller, args=(n,)) for n in range(THREADS)]
        swapper = threading.Thread(target=reloader)
        for t in [*callers, swapper]:
            t.start()
        for t in [*callers, swapper]:
            t.join()
    assert failures == [], failures[0]
    assert reloads == [RELOADS]
    assert min(done) >= CALLS
