"""Isolated mode: the same plugins in a worker process, and plugins built to misbehave there."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cliproxy_host import envelope as env
from cliproxy_host import errors
from cliproxy_host.backends.guard import GuardedBackend, GuardLimits
from cliproxy_host.backends.isolated import client as client_module
from cliproxy_host.backends.isolated import core_build
from cliproxy_host.backends.isolated import process as process_module
from cliproxy_host.backends.isolated.client import IsolatedPlugin
from cliproxy_host.backends.isolated.host_core import host_core
from cliproxy_host.backends.isolated.limits import IsolationLimits
from cliproxy_host.backends.isolated.wire import (
    GIL_HOLD_S,
    LINE_BUFFER,
    CallLine,
    Channel,
    FrameTooLarge,
    Kind,
    ProtocolError,
)
from cliproxy_host.backends.native import NativePlugin
from cliproxy_host.backends.protocol import Health, State
from cliproxy_host.sdk.cpu import spare_cpu

from ..conftest import REPO, CompilePlugin

Handler = Callable[[str, str, bytes], bytes]
# What the tests call: an isolated backend as the host runs it (behind its guard, which
# hands it each call's timeout and decodes its answers), or a bare one.
Plugin = GuardedBackend | IsolatedPlugin
Load = Callable[..., GuardedBackend]


def answer_ok(plugin_id: str, method: str, request: bytes) -> bytes:
    return env.ok(
        {"plugin": plugin_id, "method": method, "request": orjson.loads(request or b"{}")}
    )


@pytest.fixture
def load() -> Iterator[Load]:
    loaded: list[GuardedBackend] = []

    def load_(
        path: Path,
        handler: Handler = answer_ok,
        plugin_id: str = "tp",
        timeout_s: float | None = 30.0,
        **limits: Any,
    ) -> GuardedBackend:
        isolation = IsolationLimits(**limits)
        plugin = GuardedBackend(
            IsolatedPlugin(plugin_id, path, handler, isolation),
            GuardLimits(timeout_s=timeout_s, max_response_bytes=isolation.max_response_bytes),
        )
        loaded.append(plugin)
        return plugin

    yield load_
    for plugin in loaded:
        plugin.close()


def result(plugin: Plugin | NativePlugin, method: str, request: Any = None) -> Any:
    data = b"" if request is None else orjson.dumps(request)
    if isinstance(plugin, GuardedBackend):
        return plugin.call(method, data)  # decoded by the guard
    return env.decode(plugin.call(method, data), plugin_id=plugin.plugin_id, method=method)


def worker_pid(plugin: Plugin) -> int:
    pid = result(plugin, "pid")["pid"]
    assert isinstance(pid, int)
    return pid


class Sleepers:
    """Threads that each call the plugin's `sleep` once, started at once."""

    def __init__(self, plugin: Plugin, count: int, ms: int) -> None:
        self.answers: list[Any] = []
        self.threads = [
            threading.Thread(
                target=lambda: self.answers.append(result(plugin, "sleep", {"ms": ms}))
            )
            for _ in range(count)
        ]
        for t in self.threads:
            t.start()

    def join(self) -> list[Any]:
        for t in self.threads:
            t.join()
        return self.answers


def config_request(yaml: str) -> dict[str, Any]:
    return {"config_yaml": base64.b64encode(yaml.encode()).decode(), "schema_version": 3}


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie has exited: only its parent's wait() is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def children() -> list[int]:
    """PIDs whose parent is this process, zombies included."""
    mine = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == mine:
                found.append(int(entry.name))
    return found


def error_fields(exc: errors.PluginError) -> tuple[Any, ...]:
    return (
        type(exc),
        exc.code,
        exc.message,
        exc.retryable,
        exc.http_status,
        exc.plugin_id,
        exc.method,
    )


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and signals")


@pytest.fixture(autouse=True, params=["native-core", "python-lines"])
def worker_core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs against both ways a worker serves its call lines: in C by the
    native line core (the default), and in Python (where no compiler built the core)."""
    if request.param == "python-lines":
        monkeypatch.setattr(core_build, "line_core", lambda: None)
    else:
        assert core_build.line_core() is not None, "the native line core did not build"
    return str(request.param)


# -- loading, calling, closing -----------------------------------------------------------


def test_plugin_runs_in_a_worker_and_close_shuts_it_down_in_order(
    compile_plugin: CompilePlugin, marker: Path, load: Load
) -> None:
    plugin = load(compile_plugin(TP_WITH_SHUTDOWN=True, TP_MARKER=marker))
    assert result(plugin, "echo", {"a": [1, 2]}) == {"a": [1, 2]}
    pid = worker_pid(plugin)
    assert pid != os.getpid()
    assert plugin.health() == Health()  # running, nothing happened
    plugin.close()
    assert wait_until(lambda: not alive(pid))
    assert marker.read_text().split() == ["init", "plugin.shutdown", "shutdown"]
    with pytest.raises(errors.PluginError) as info:
        plugin.call("echo", b"{}")
    assert info.value.code == "plugin_unloading"
    plugin.close()  # twice is fine


def test_close_waits_for_calls_in_flight(
    compile_plugin: CompilePlugin, marker: Path, load: Load
) -> None:
    plugin = load(compile_plugin(TP_WITH_SHUTDOWN=True, TP_MARKER=marker))
    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(result(plugin, "sleep", {"ms": 300})))
    caller.start()
    time.sleep(0.1)
    plugin.close()
    caller.join()
    assert answers == [{"slept_ms": 300}]
    assert marker.read_text().split() == ["init", "plugin.shutdown", "shutdown"]


def test_nothing_leaks_across_crashes_and_close(testplugin: Path) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    plugin = IsolatedPlugin("tp", testplugin, answer_ok)
    with pytest.raises(errors.PluginError):
        plugin.call("segfault", b"{}")
    assert result(plugin, "echo", {}) == {}
    plugin.close()
    assert children() == []
    assert len(os.listdir("/proc/self/fd")) == fds
    assert not [t for t in threading.enumerate() if t.name.startswith("cliproxy-isolated-tp")]


# A plugin whose init misbehaves, for what testplugin's knobs do not cover.
_INIT_PLUGIN = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cliproxy_plugin.h"

static int call(const char* method, const uint8_t* request, size_t len, cliproxy_buffer* out) {
    static const char ok[] = "{\"ok\":true,\"result\":{}}";
    (void)method;
    (void)request;
    (void)len;
    char* p = malloc(sizeof ok - 1);
    if (!p) return 1;
    memcpy(p, ok, sizeof ok - 1);
    out->ptr = p;
    out->len = sizeof ok - 1;
    return 0;
}

static void free_buffer(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,
                                         cliproxy_plugin_api* plugin) {
#if defined(SLOW_INIT)
    struct timespec ts = {30, 0};
    nanosleep(&ts, NULL);
#elif defined(CRASH_INIT)
    abort();
#elif defined(LOG_INIT)
    static const char msg[] = "{\"level\":\"info\",\"message\":\"init\"}";
    cliproxy_buffer answer = {0};
    if (host->call(host->host_ctx, "host.log", (const uint8_t*)msg, sizeof msg - 1, &answer))
        return 9;
    host->free_buffer(answer.ptr, answer.len);
#endif
    (void)host;
    plugin->abi_version = 1;
    plugin->call = call;
    plugin->free_buffer = free_buffer;
    return 0;
}
"""


@pytest.fixture
def init_plugin(compile_plugin: CompilePlugin, tmp_path: Path) -> Callable[..., Path]:
    source = tmp_path / "initplugin.c"
    source.write_text(_INIT_PLUGIN)
    return lambda **knobs: compile_plugin(source, **knobs)


def test_a_plugin_may_call_the_host_from_its_init(init_plugin: Callable[..., Path]) -> None:
    seen: list[str] = []

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        seen.append(method)
        return env.ok({})

    plugin = IsolatedPlugin("tp", init_plugin(LOG_INIT=True), handler)
    try:
        assert seen == ["host.log"]
        assert result(plugin, "anything", {}) == {}
    finally:
        plugin.close()


def test_a_crash_in_init_is_a_load_error(init_plugin: Callable[..., Path]) -> None:
    path = init_plugin(CRASH_INIT=True)
    with pytest.raises(errors.PluginLoadError) as info:
        IsolatedPlugin("tp", path, answer_ok)
    assert info.value.code == "plugin_load_failed"
    assert str(path) in info.value.message
    assert "killed by SIGABRT" in info.value.message
    assert children() == []


def test_a_hang_in_init_is_a_load_error_after_start_timeout(
    init_plugin: Callable[..., Path],
) -> None:
    path = init_plugin(SLOW_INIT=True)
    started = time.monotonic()
    with pytest.raises(errors.PluginLoadError) as info:
        IsolatedPlugin("tp", path, answer_ok, IsolationLimits(start_timeout_s=0.8))
    assert time.monotonic() - started < 5
    assert info.value.code == "plugin_load_failed"
    assert "start_timeout_s" in info.value.message
    assert children() == []


# -- the same behaviour as in-process ----------------------------------------------------


def _load_error(factory: Callable[[], object]) -> errors.PluginError:
    with pytest.raises(errors.PluginLoadError) as info:
        factory()
    return info.value


@pytest.mark.parametrize(
    "knobs",
    [
        {"TP_NO_INIT": True},
        {"TP_INIT_RC": 7, "TP_WITH_SHUTDOWN": True},
        {"TP_ABI_VERSION": 2, "TP_WITH_SHUTDOWN": True},
        {"TP_NULL_CALL": True},
        {"TP_NULL_FREE": True},
    ],
    ids=["no-init", "init-rc", "abi-2", "null-call", "null-free"],
)
def test_load_failures_are_the_in_process_ones(
    compile_plugin: CompilePlugin, marker: Path, knobs: dict[str, Any]
) -> None:
    path = compile_plugin(**knobs, TP_MARKER=marker)
    native = _load_error(lambda: NativePlugin("bad", path, answer_ok))
    native_events = marker.read_text() if marker.exists() else None
    marker.unlink(missing_ok=True)
    isolated = _load_error(lambda: IsolatedPlugin("bad", path, answer_ok))
    assert error_fields(isolated) == error_fields(native)
    # the worker went through the same init and shutdown steps
    assert (marker.read_text() if marker.exists() else None) == native_events
    assert children() == []


@pytest.mark.parametrize("kind", ["missing", "not-a-library"])
def test_unloadable_files_are_refused_as_in_process(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.so"
    if kind == "not-a-library":
        path.write_text("#!/bin/sh\necho not a library\n")
    native = _load_error(lambda: NativePlugin("bad", path, answer_ok))
    isolated = _load_error(lambda: IsolatedPlugin("bad", path, answer_ok))
    assert error_fields(isolated) == error_fields(native)
    assert str(path) in isolated.message


_CALLS = [
    ("echo", b'{"x":1}'),
    ("echo", b""),
    ("rc_with_envelope", b"{}"),
    ("rc_without_envelope", b"{}"),
    ("rc_no_response", b"{}"),
    ("null_with_len", b"{}"),
    ("not_json", b"{}"),
    ("not_utf8", b"{}"),
    ("empty", b"{}"),
    ("no.such.method", b"{}"),
    ("decline", b"{}"),
    ("fail", b"{}"),
    ("big", b'{"bytes":100000}'),
    ("host_bad_ctx", b"{}"),
]


def _outcome(plugin: IsolatedPlugin | NativePlugin, method: str, request: bytes) -> Any:
    try:
        data = plugin.call(method, request)
    except errors.PluginError as exc:
        return ("raised", *error_fields(exc))
    try:
        return ("answered", data, env.decode(data, plugin_id="tp", method=method))
    except errors.PluginError as exc:
        return ("answered", data, *error_fields(exc))


def test_every_call_outcome_is_the_in_process_one(testplugin: Path) -> None:
    native = NativePlugin("tp", testplugin, answer_ok)
    try:
        expected = [_outcome(native, m, r) for m, r in _CALLS]
    finally:
        native.close()
    # bare backends: the bytes each answers, before any guard decodes them
    isolated = IsolatedPlugin("tp", testplugin, answer_ok)
    try:
        assert [_outcome(isolated, m, r) for m, r in _CALLS] == expected
        stats = result(isolated, "stats")
    finally:
        isolated.close()
    assert stats["allocs"] == stats["frees"] == len(_CALLS) - 3  # three answer nothing
    assert stats["bad_frees"] == 0


# -- host callbacks ----------------------------------------------------------------------


@pytest.mark.parametrize("via", ["host", "host_thread"])
def test_plugin_calls_the_host_from_its_call_and_from_its_own_thread(
    testplugin: Path, load: Load, via: str
) -> None:
    seen: list[tuple[str, str, bytes]] = []
    threads: list[threading.Thread] = []

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        seen.append((plugin_id, method, request))
        threads.append(threading.current_thread())
        return env.ok({"pong": True})

    plugin = load(testplugin, handler, plugin_id="caller")
    assert result(plugin, via, {"method": "host.ping", "request": {"x": [1, 2]}}) == {"pong": True}
    assert [(p, m, orjson.loads(r)) for p, m, r in seen] == [("caller", "host.ping", {"x": [1, 2]})]
    # From the thread running the call, the host call comes back on the call's own line
    # and is answered by the calling thread; from a thread of the plugin's, a thread of
    # the host's answers it (on that thread's own line, or from the control socket).
    assert (threads[0] is threading.current_thread()) is (via == "host")


def test_a_slow_host_answer_counts_against_the_call_timeout(testplugin: Path, load: Load) -> None:
    def slow(plugin_id: str, method: str, request: bytes) -> bytes:
        time.sleep(1.2)
        return env.ok({})

    plugin = load(testplugin, slow, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(errors.PluginError) as info:
        plugin.call("host", b'{"method": "host.slow", "request": {}}')
    assert info.value.code == "plugin_timeout"
    assert time.monotonic() - started < 3


def test_host_callbacks_may_reenter_the_plugin_several_levels_deep(
    testplugin: Path, load: Load
) -> None:
    box: dict[str, GuardedBackend] = {}

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        # plugin -> host -> plugin -> host ... while every outer call is still running
        depth = orjson.loads(request)["depth"]
        if depth == 0:
            return env.ok(box["p"].call("echo", b'{"bottom": true}'))
        inner = {"method": "host.deeper", "request": {"depth": depth - 1}}
        return env.ok(box["p"].call("host_thread" if depth % 2 else "host", orjson.dumps(inner)))

    box["p"] = load(testplugin, handler)
    request = {"method": "host.deeper", "request": {"depth": 3}}
    assert result(box["p"], "host", request) == {"bottom": True}


def test_exception_in_a_host_callback_becomes_an_error_envelope(
    testplugin: Path, load: Load
) -> None:
    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        raise RuntimeError("callback exploded")

    plugin = load(testplugin, handler)
    with pytest.raises(errors.PluginError) as info:
        result(plugin, "host_thread", {"method": "host.log", "request": {}})
    assert info.value.code == "host_call_failed"
    assert "callback exploded" in info.value.message


def test_eight_threads_call_while_the_plugin_calls_back(testplugin: Path, load: Load) -> None:
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        with lock:
            counts[method] = counts.get(method, 0) + 1
        return env.ok(orjson.loads(request))

    plugin = load(testplugin, handler)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(50):
                via = "host_thread" if i % 2 else "host"
                got = result(plugin, via, {"method": "host.echo", "request": {"n": n, "i": i}})
                assert got == {"n": n, "i": i}
                assert result(plugin, "echo", {"n": n}) == {"n": n}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert counts == {"host.echo": 400}
    assert result(plugin, "stats")["bad_frees"] == 0


def test_calls_from_many_threads_run_at_the_same_time(testplugin: Path, load: Load) -> None:
    plugin = load(testplugin)
    started = time.monotonic()
    assert Sleepers(plugin, 8, 400).join() == [{"slept_ms": 400}] * 8
    assert time.monotonic() - started < 1.6  # 3.2 s one after another


def test_many_threads_calling_at_once_exceed_the_caller_slots_and_free_them(
    testplugin: Path, load: Load
) -> None:
    # The native core gives each caller thread a slot (64) for waiting on the others'
    # Python (wire.GIL_HOLD_S); threads beyond them go without one, and a thread's slot is
    # freed when it ends: two waves of 80 threads, every answer right.
    plugin = load(testplugin)
    for wave in range(2):
        answers: list[Any] = []
        go = threading.Barrier(80)

        def caller(
            n: int, wave: int = wave, answers: list[Any] = answers, go: threading.Barrier = go
        ) -> None:
            go.wait(10)
            for i in range(3):
                answers.append(result(plugin, "echo", {"n": n, "i": i, "wave": wave}))

        threads = [threading.Thread(target=caller, args=(n,)) for n in range(80)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        expected = [{"n": n, "i": i, "wave": wave} for n in range(80) for i in range(3)]
        assert sorted(answers, key=orjson.dumps) == sorted(expected, key=orjson.dumps)


@pytest.mark.parametrize(("spin_us", "hold_s"), [(50, GIL_HOLD_S), (0, 0.0)])
def test_an_answered_caller_waits_for_another_callers_python_only_with_spin(
    testplugin: Path, load: Load, spin_us: int, hold_s: float
) -> None:
    plugin = load(testplugin, spin_us=spin_us)
    assert result(plugin, "echo", {}) == {}
    isolated = plugin.backend
    assert isinstance(isolated, IsolatedPlugin)
    worker = isolated._supervisor._worker
    assert worker is not None
    assert [line.hold_s for line in worker.idle_lines] == [hold_s]


def worker_threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def worker_sockets(pid: int) -> int:
    """The sockets a worker holds: control, the one new lines come over, and its lines."""
    found = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            found += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return found


def test_each_concurrent_call_gets_a_line_and_idle_lines_are_closed(
    testplugin: Path, load: Load
) -> None:
    plugin = load(testplugin, ping_interval_s=0.1, line_idle_s=0.3)
    pid = worker_pid(plugin)
    assert worker_sockets(pid) == 3  # control, lines, and the line that asked for the pid
    fds = len(os.listdir("/proc/self/fd"))
    threads_before = worker_threads(pid)
    # Long enough that all six overlap even when a loaded machine starts them late (a
    # line is closed line_idle_s after its call, and a late call would reuse it).
    sleepers = Sleepers(plugin, 6, 1500)
    # five more lines than the one in use before, each with a thread in the worker
    assert wait_until(lambda: worker_sockets(pid) == 3 + 5)
    assert worker_threads(pid) >= threads_before + 4  # (its loading thread may have ended)
    assert sleepers.join() == [{"slept_ms": 1500}] * 6
    assert len(os.listdir("/proc/self/fd")) >= fds + 5
    # unused for line_idle_s: closed on both sides, but for the last one
    assert wait_until(lambda: worker_sockets(pid) == 3)
    assert wait_until(lambda: worker_threads(pid) <= threads_before)
    assert wait_until(lambda: len(os.listdir("/proc/self/fd")) == fds)
    assert result(plugin, "echo", {"still": "served"}) == {"still": "served"}
    assert worker_pid(plugin) == pid


def test_a_method_slower_than_the_spin_time_is_slept_on(
    testplugin: Path, load: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("nobody polls on one CPU: the caller would take the worker's")
    # A long spin time, so that even a thread starved by a busy machine shows it; and
    # polling as on a machine with a spare CPU, whatever this one's load.
    monkeypatch.setattr(client_module, "spare_cpu", lambda: True)
    monkeypatch.setattr(client_module, "CPUS", 4)
    plugin = load(testplugin, spin_us=500_000)
    polls: list[float] = []  # the poll time each call on a line was sent with
    send = CallLine.call

    def call(line: CallLine, *args: Any) -> Any:
        polls.append(args[-1])
        return send(line, *args)

    monkeypatch.setattr(CallLine, "call", call)

    def cpu_seconds(ms: int) -> float:
        started = time.thread_time()
        assert result(plugin, "sleep", {"ms": ms}) == {"slept_ms": ms}
        return time.thread_time() - started

    # The first call polls for the whole spin time, and learns the method is slow; then
    # calls of it sleep until the answer comes. A poll yields the CPU between looks, so
    # on a busy machine it takes little CPU time (~2 ms in 0.5 s beside two spinning
    # processes): still several times what sleeping takes.
    polled = cpu_seconds(700)
    slept = cpu_seconds(700)
    assert polls == [0.5, 0.0]
    assert slept < 0.03
    assert polled > 3 * slept
    # a method that answers within the spin time is still polled for: no CPU check here,
    # only that the answer is the same
    assert result(plugin, "echo", {"x": 1}) == {"x": 1}


_BUSY = "import time\nend = time.monotonic() + 20\nwhile time.monotonic() < end: pass\n"


@contextlib.contextmanager
def busy_machine() -> Iterator[None]:
    """More processes spinning than this machine has CPUs (each stops after 20 s)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range((os.cpu_count() or 1) + 2)
    ]
    try:
        assert wait_until(lambda: not spare_cpu(), timeout=10), "the load did not show"
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_on_a_loaded_machine_callers_sleep_instead_of_polling(testplugin: Path, load: Load) -> None:
    plugin = load(testplugin, spin_us=500_000)
    assert result(plugin, "echo", {"x": 1}) == {"x": 1}
    with busy_machine():
        started = time.thread_time()
        # a method never seen before: on a machine with a spare CPU it would be polled for
        assert result(plugin, "sleep", {"ms": 700}) == {"slept_ms": 700}
        assert time.thread_time() - started < 0.03


def test_waiting_for_a_restart_counts_against_the_call_timeout(
    testplugin: Path, load: Load
) -> None:
    plugin = load(testplugin, timeout_s=2.0, backoff_initial_s=0.6)
    with pytest.raises(errors.PluginError, match="SIGSEGV"):
        plugin.call("segfault", b"{}")
    started = time.monotonic()
    with pytest.raises(errors.PluginError) as info:
        # 1.8 s would fit in a fresh 2 s, but not in what is left after the restart
        plugin.call("sleep", b'{"ms": 1800}')
    assert info.value.code == "plugin_timeout"
    assert 1.8 < time.monotonic() - started < 3.0


def _line_pair(timeout: float | None) -> tuple[socket.socket, CallLine]:
    """A call line (exchanging in C, or in Python where the worker_core fixture turned the
    core off) whose worker end is a bare socket the test plays the worker on."""
    ours, theirs = socket.socketpair()
    return theirs, CallLine(ours, max_frame=1024, timeout=timeout, core=host_core())


def test_a_call_line_times_out_and_tells_eof_from_silence() -> None:
    # silence: TimeoutError after the timeout, not a hang
    peer, line = _line_pair(0.2)
    with peer:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            line.call(1, "echo", b"{}", 0.2, 0.0)
        assert 0.15 < time.monotonic() - started < 2
        line.close()
    # half a frame, then silence: still a timeout
    peer, line = _line_pair(0.2)
    with peer:
        peer.sendall(b"\x00\x00\x00\x10\x03")
        with pytest.raises(TimeoutError):
            line.call(1, "echo", b"{}", 0.2, 0.0)
        line.close()
    # half a frame, then EOF: the worker is gone
    peer, line = _line_pair(5.0)
    peer.sendall(b"\x00\x00\x00\x10\x03")
    peer.shutdown(socket.SHUT_WR)
    assert line.call(1, "echo", b"{}", 5.0, 0.0) is None
    peer.close()
    line.close()
    # a whole frame, polled for and read; the CALL reached the worker whole
    peer, line = _line_pair(5.0)
    with peer:
        Channel(peer).send(Kind.RESULT, 9, b'{"ok":true}')
        assert line.call(9, "echo", b"{}", 5.0, 0.01) == (Kind.RESULT, 9, b'{"ok":true}')
        assert Channel(peer).recv() == (Kind.CALL, 9, b"\x00\x04echo{}")
        # and a length over the limit is refused before it is read
        Channel(peer).send(Kind.RESULT, 10, b"x" * 1025)
        with pytest.raises(FrameTooLarge):
            line.call(10, "echo", b"{}", 5.0, 0.0)
        line.close()


def test_a_call_line_keeps_the_timeout_each_call_brings() -> None:
    peer, line = _line_pair(None)  # made before any call: untimed
    with peer:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            line.call(1, "echo", b"{}", 0.2, 0.0)  # the guard's timeout for this call
        assert 0.15 < time.monotonic() - started < 2
    line.close()


def test_a_call_line_reads_a_frame_larger_than_its_buffer() -> None:
    ours, peer = socket.socketpair()
    line = CallLine(ours, max_frame=4 * LINE_BUFFER, timeout=5.0, core=host_core())
    payload = bytes(range(256)) * (3 * LINE_BUFFER // 256)
    with peer:
        sender = threading.Thread(target=Channel(peer).send, args=(Kind.RESULT, 3, payload))
        sender.start()
        assert line.call(3, "big", b"{}", 5.0, 0.0) == (Kind.RESULT, 3, payload)
        sender.join(5)
        # bytes past a frame, which no worker sends, break the protocol
        Channel(peer).send(Kind.RESULT, 4, b"{}")
        peer.sendall(b"junk")
        time.sleep(0.05)
        with pytest.raises(ProtocolError):
            line.call(4, "echo", b"{}", 5.0, 0.0)
    line.close()


# -- crashes -----------------------------------------------------------------------------


def standbys(path: Path) -> list[int]:
    """This process's children waiting as standby workers for the plugin at `path`:
    started --standby, and the plugin not loaded (a woken one keeps its command line)."""
    found = []
    for pid in children():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            loaded = str(path) in Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        if b"--standby" in argv and not loaded and alive(pid):
            found.append(pid)
    return found


def test_a_restart_wakes_the_standby_worker_with_the_config(testplugin: Path, load: Load) -> None:
    plugin = load(testplugin)
    result(plugin, "plugin.register", config_request("mode: safe\n"))
    assert wait_until(lambda: len(standbys(testplugin)) == 1)
    (standby,) = standbys(testplugin)
    assert worker_pid(plugin) != standby  # it waits, with the plugin not loaded
    with pytest.raises(errors.PluginError):
        plugin.call("segfault", b"{}")
    assert worker_pid(plugin) == standby
    assert base64.b64decode(result(plugin, "last_config")["config_yaml"]) == b"mode: safe\n"
    # the next restart has a standby of its own
    assert wait_until(lambda: len(standbys(testplugin)) == 1 and standbys(testplugin) != [standby])
    plugin.close()
    assert children() == []


def test_a_standby_that_died_is_replaced_by_a_new_worker(testplugin: Path, load: Load) -> None:
    plugin = load(testplugin)
    assert wait_until(lambda: len(standbys(testplugin)) == 1)
    (standby,) = standbys(testplugin)
    os.kill(standby, signal.SIGKILL)
    assert wait_until(lambda: not alive(standby))
    with pytest.raises(errors.PluginError):
        plugin.call("segfault", b"{}")
    assert worker_pid(plugin) not in (standby, os.getpid())
    assert result(plugin, "echo", {"b": 2}) == {"b": 2}


def test_without_a_standby_worker_a_restart_spawns_one(testplugin: Path, load: Load) -> None:
    plugin = load(testplugin, standby_worker=False)
    before = worker_pid(plugin)
    with pytest.raises(errors.PluginError):
        plugin.call("segfault", b"{}")
    assert worker_pid(plugin) != before
    assert standbys(testplugin) == []


@pytest.mark.parametrize(
    ("method", "how", "signame"),
    [
        ("segfault", "killed by SIGSEGV", "SIGSEGV"),
        ("abort", "killed by SIGABRT", "SIGABRT"),
        ("exit", "exited with status 3", None),
    ],
)
def test_a_crash_fails_the_call_and_a_configured_worker_takes_over(
    testplugin: Path, load: Load, method: str, how: str, signame: str | None
) -> None:
    plugin = load(testplugin)
    result(plugin, "plugin.register", config_request("mode: safe\n"))
    result(plugin, "plugin.reconfigure", config_request("mode: fast\n"))
    before = worker_pid(plugin)
    with pytest.raises(errors.PluginError) as info:
        plugin.call(method, b"{}")
    err = info.value
    assert (err.code, err.plugin_id, err.method) == ("plugin_crashed", "tp", method)
    assert err.message == f"plugin tp crashed in {method} (worker {how})"
    # the next call waits for the new worker instead of failing
    assert worker_pid(plugin) != before
    config = result(plugin, "last_config")
    assert base64.b64decode(config["config_yaml"]) == b"mode: fast\n"
    # a fresh process is registered (with the latest config), not reconfigured
    assert (config["register_calls"], config["reconfigure_calls"]) == (1, 0)
    health = plugin.health()
    assert (health.state, health.restarts, health.last_signal) == (State.RUNNING, 1, signame)
    assert health.last_error is not None
    assert method in health.last_error
    assert how in health.last_error
    assert not alive(before)


def test_a_death_is_seen_while_a_child_of_the_worker_holds_its_sockets(
    testplugin: Path, load: Load
) -> None:
    plugin = load(testplugin, timeout_s=20.0)
    before = worker_pid(plugin)
    started = time.monotonic()
    with pytest.raises(errors.PluginError) as info:
        # the forked child keeps the worker's ends of every socket open for 4 s
        plugin.call("fork_then_segfault", b"{}")
    assert time.monotonic() - started < 3
    assert (info.value.code, info.value.method) == ("plugin_crashed", "fork_then_segfault")
    assert "SIGSEGV" in info.value.message
    assert worker_pid(plugin) != before
    # and what the worker left running went with it
    assert wait_until(lambda: not in_process_group(before), timeout=2)


def in_process_group(pgid: int) -> list[int]:
    """The PIDs of the live processes in a process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


def test_calls_in_flight_on_other_threads_fail_when_the_worker_dies(
    testplugin: Path, load: Load
) -> None:
    plugin = load(testplugin)
    failures: list[errors.PluginError] = []

    def sleeper() -> None:
        with pytest.raises(errors.PluginError) as info:
            plugin.call("sleep", b'{"ms": 20000}')
        failures.append(info.value)

    threads = [threading.Thread(target=sleeper) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(errors.PluginError, match="SIGSEGV"):
        plugin.call("segfault", b"{}")
    for t in threads:
        t.join()
    assert time.monotonic() - started < 5
    assert [(e.code, e.method, e.message) for e in failures] == [
        ("plugin_crashed", "sleep", "plugin tp crashed in sleep (worker killed by SIGSEGV)")
    ] * 3
    assert result(plugin, "echo", {"after": 1}) == {"after": 1}


def test_a_hung_call_times_out_and_the_worker_is_replaced(testplugin: Path, load: Load) -> None:
    plugin = load(testplugin, timeout_s=0.5)
    before = worker_pid(plugin)
    started = time.monotonic()
    with pytest.raises(errors.PluginError) as info:
        plugin.call("hang", b"{}")
    assert 0.4 < time.monotonic() - started < 2
    err = info.value
    assert (err.code, err.plugin_id, err.method) == ("plugin_timeout", "tp", "hang")
    assert "0.5 s" in err.message
    # waiting for the restart counts against a call's timeout, so wait here instead
    assert wait_until(lambda: plugin.health().state is State.RUNNING)
    assert worker_pid(plugin) != before
    health = plugin.health()
    assert (health.state, health.restarts, health.last_signal) == (State.RUNNING, 1, "SIGKILL")
    assert health.last_error is not None
    assert "hang" in health.last_error


def test_too_many_crashes_fuse_the_plugin_until_its_config_changes(
    testplugin: Path, load: Load
) -> None:
    plugin = load(testplugin, fuse_crashes=3, fuse_window_s=30.0)
    safe = config_request("mode: safe\n")
    result(plugin, "plugin.register", safe)
    for _ in range(3):
        with pytest.raises(errors.PluginError) as info:
            plugin.call("abort", b"{}")
        assert info.value.code == "plugin_crashed"
    health = plugin.health()
    assert (health.state, health.restarts, health.last_signal) == (State.FUSED, 2, "SIGABRT")
    assert health.last_error is not None
    assert "fused after 3 crashes in 30 s" in health.last_error
    assert "abort" in health.last_error  # the reason is kept
    started = time.monotonic()
    with pytest.raises(errors.PluginError) as info:
        plugin.call("echo", b"{}")
    assert time.monotonic() - started < 0.5  # fails fast
    assert info.value.code == "plugin_unavailable"
    assert info.value.message == health.last_error
    # the same config again does not re-arm it; a new one does
    with pytest.raises(errors.PluginError):
        plugin.call("plugin.reconfigure", orjson.dumps(safe))
    time.sleep(0.3)
    assert plugin.health().state is State.FUSED
    result(plugin, "plugin.reconfigure", config_request("mode: fast\n"))
    assert plugin.health().state is State.RUNNING
    config = result(plugin, "last_config")
    assert base64.b64decode(config["config_yaml"]) == b"mode: fast\n"


def restarted(plugin: Plugin, times: int) -> bool:
    return plugin.health().restarts == times


def test_restarts_back_off_immediately_then_growing_then_capped(
    testplugin: Path, load: Load
) -> None:
    plugin = load(testplugin, fuse_crashes=10, backoff_max_s=0.3)
    delays = []
    for n in range(1, 6):
        assert wait_until(lambda: plugin.health().state is State.RUNNING)
        with pytest.raises(errors.PluginError):
            plugin.call("segfault", b"{}")
        crashed = time.monotonic()
        # restarts counts workers started: it moves when the backoff is over
        assert wait_until(functools.partial(restarted, plugin, n))
        delays.append(time.monotonic() - crashed)
    # Measured from when the caller saw the crash, a little after the supervisor did and
    # started the backoff: 50 ms of slack below each backoff. Above the cap (0.3 s), a
    # restart's own time on a loaded machine; without the cap the last would be 2 s.
    assert delays[0] < 0.2, delays
    assert delays[1] >= 0.25, delays
    assert all(0.25 <= d < 1.5 for d in delays[2:]), delays


# -- limits ------------------------------------------------------------------------------


def test_a_response_over_max_response_bytes_is_an_error_not_a_dead_worker(
    testplugin: Path, load: Load
) -> None:
    plugin = load(testplugin, max_response_bytes=1024 * 1024)
    before = worker_pid(plugin)
    with pytest.raises(errors.PluginResponseError) as info:
        plugin.call("big", orjson.dumps({"bytes": 64 * 1024 * 1024}))
    assert (info.value.code, info.value.method) == ("response_too_large", "big")
    assert "max_response_bytes (1048576)" in info.value.message
    assert len(result(plugin, "big", {"bytes": 1000 * 1000})["data"]) == 1000 * 1000
    assert worker_pid(plugin) == before
    assert plugin.health().restarts == 0


def test_a_large_response_within_the_limit_is_copied_whole(testplugin: Path, load: Load) -> None:
    data = result(load(testplugin), "big", {"bytes": 16 * 1024 * 1024})["data"]
    assert len(data) == 16 * 1024 * 1024
    assert set(data) == {"a"}


def test_the_host_refuses_to_read_a_frame_over_its_limit() -> None:
    left, right = socket.socketpair()
    try:
        sender, receiver = Channel(left), Channel(right, max_frame=1024)
        sender.send(Kind.RESULT, 7, b"x" * 1024)
        assert receiver.recv() == (Kind.RESULT, 7, b"x" * 1024)
        sender.send(Kind.RESULT, 8, b"x" * 1025)
        with pytest.raises(FrameTooLarge):
            receiver.recv()
    finally:
        left.close()
        right.close()


def test_memory_limit_makes_a_big_allocation_fail_inside_the_worker(
    testplugin: Path, load: Load
) -> None:
    plugin = load(testplugin, memory_limit_mb=256)
    before = worker_pid(plugin)
    with pytest.raises(errors.PluginError) as info:
        result(plugin, "alloc", {"mb": 512})
    assert info.value.code == "out_of_memory"
    assert result(plugin, "alloc", {"mb": 16}) == {"allocated_mb": 16, "ok": True}
    assert worker_pid(plugin) == before


def test_a_call_line_the_worker_takes_only_in_part_is_refused_at_once(
    testplugin: Path, load: Load, worker_core: str
) -> None:
    """Out of file descriptors, the worker takes a new line's socket but not its ring: the
    call fails soon as busy, with the reason, rather than waiting out its timeout on a
    ring nobody reads."""
    if worker_core != "native-core":
        # Without a ring the host cannot tell a line dropped before the worker read the
        # call from one closed under it: it may take the worker for broken (README).
        pytest.skip("call lines in Python have no ring")
    plugin = load(testplugin, timeout_s=20.0)
    before = worker_pid(plugin)
    assert result(plugin, "fd_limit", {"free": 1})["limit"] > 0  # the socket fits
    sleeper = Sleepers(plugin, 1, ms=1500)  # holds the one line there is
    time.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(errors.PluginBusy) as info:
        result(plugin, "echo", {})  # needs a new line: only its socket fits
    assert time.monotonic() - started < 5.0
    assert sleeper.join() == [{"slept_ms": 1500}]
    assert info.value.retryable
    assert "file descriptors" in info.value.message
    assert worker_pid(plugin) == before  # nothing was wrong with the worker itself


def test_cpu_limit_stops_a_spinning_worker(testplugin: Path, load: Load) -> None:
    plugin = load(testplugin, cpu_limit_s=1, timeout_s=20.0)
    with pytest.raises(errors.PluginError) as info:
        plugin.call("hang", b"{}")
    assert info.value.code == "plugin_crashed"
    assert "SIGXCPU" in info.value.message
    assert result(plugin, "echo", {}) == {}


# -- the worker's life -------------------------------------------------------------------


def test_the_worker_dies_with_a_host_killed_by_sigkill(testplugin: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from cliproxy_host import envelope
        from cliproxy_host.backends.isolated.client import IsolatedPlugin

        plugin = IsolatedPlugin("tp", Path(sys.argv[1]), lambda *a: envelope.ok({}))
        print(envelope.decode(plugin.call("pid", b""))["pid"], flush=True)
        time.sleep(60)
        """
    )
    host = subprocess.Popen(
        [sys.executable, "-c", script, str(testplugin)], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert host.stdout is not None
        pid = int(host.stdout.readline())
        assert alive(pid)
    finally:
        host.kill()
        host.wait()
        if host.stdout is not None:
            host.stdout.close()
    assert wait_until(lambda: not alive(pid), timeout=5)


def test_worker_output_goes_to_the_log_with_the_plugin_id(
    testplugin: Path, load: Load, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cliproxy_host.plugin.chatty")
    plugin = load(testplugin, plugin_id="chatty")
    result(plugin, "stderr", {"message": "hello from inside"})

    def logged() -> bool:
        return any(
            r.name == "cliproxy_host.plugin.chatty"
            and r.levelno == logging.WARNING
            and r.getMessage() == "chatty: hello from inside"
            for r in caplog.records
        )

    assert wait_until(logged)


def test_a_worker_that_stops_answering_pings_is_replaced(testplugin: Path, load: Load) -> None:
    # No standby worker: the states are sampled every 10 ms below, and a restart that
    # wakes a standby (~5 ms) can come and go between two samples.
    plugin = load(testplugin, ping_interval_s=0.2, ping_timeout_s=0.3, standby_worker=False)
    before = worker_pid(plugin)
    time.sleep(0.5)  # pings come and go
    assert plugin.health().restarts == 0
    states: set[State] = set()
    os.kill(before, signal.SIGSTOP)

    def replaced() -> bool:
        health = plugin.health()
        states.add(health.state)
        return health.restarts >= 1 and health.state is State.RUNNING

    assert wait_until(replaced, timeout=5)
    assert states & {State.UNHEALTHY, State.RESTARTING}
    last_error = plugin.health().last_error
    assert last_error is not None
    assert "missed a ping" in last_error
    assert worker_pid(plugin) != before
    assert not alive(before)


def test_long_calls_do_not_delay_pings(testplugin: Path, load: Load) -> None:
    plugin = load(testplugin, ping_interval_s=0.1, ping_timeout_s=0.3)
    assert Sleepers(plugin, 4, 1200).join() == [{"slept_ms": 1200}] * 4
    assert plugin.health() == Health()


def test_unloading_while_plugin_threads_call_back_is_clean(
    testplugin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        calls.append(method)
        return env.ok({})

    plugin = IsolatedPlugin("tp", testplugin, handler)
    pid = worker_pid(plugin)
    assert result(plugin, "threads_calling_host") == {"started": 4}
    assert wait_until(lambda: len(calls) > 20)
    started = time.monotonic()
    plugin.close(timeout=1.0)
    assert time.monotonic() - started < 4
    assert not alive(pid)
    assert set(calls) == {"host.log"}
    health = plugin.health()
    assert (health.last_signal, health.last_error, health.restarts) == (None, None, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- the native line core ----------------------------------------------------------------


def _thread_names(pid: int) -> list[str]:
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            names.append((task / "comm").read_text().strip())
    return names


def test_frames_larger_than_a_ring_slot_cross_on_the_socket_both_ways(
    testplugin: Path, load: Load
) -> None:
    # 200 KiB each way: the host call, its answer and the call's answer are all over a
    # ring's 64 KiB slot, and travel on the line's socket, announced in the ring
    plugin = load(testplugin, answer_ok)
    big = {"blob": "x" * 200_000}
    for _ in range(3):
        answer = result(plugin, "host", {"method": "host.log", "request": big})
        assert answer["request"] == big
        # and small frames go on in the ring, in step
        assert result(plugin, "echo", {"small": True}) == {"small": True}


def test_calls_and_host_calls_run_on_the_native_core(
    testplugin: Path, load: Load, worker_core: str
) -> None:
    seen: list[str] = []

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        seen.append(method)
        return answer_ok(plugin_id, method, request)

    plugin = load(testplugin, handler)
    pid = worker_pid(plugin)
    for via in ("host", "host_thread"):
        answer = result(plugin, via, {"method": "host.log", "request": {"m": 1}})
        assert answer["method"] == "host.log"
    assert seen == ["host.log", "host.log"]
    maps = Path(f"/proc/{pid}/maps").read_text()
    names = _thread_names(pid)
    lines = [n for n in names if n.startswith("cw-line-")]
    if worker_core == "native-core":
        assert "/linecore-" in maps
        assert lines  # the line that served these calls is a thread of the core
        assert "cw-control" in names  # and so is the control socket's reader
        # its frames travelled in the line's ring, shared with the host
        assert "memfd:cliproxy-call-line" in maps
    else:
        assert "/linecore-" not in maps
        assert lines == []
        assert "cw-control" not in names
        assert "memfd:cliproxy-call-line" not in maps


THREAD_LINE = "-thread-line"  # in the name of a host thread serving a plugin thread's line


def _thread_line_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith(THREAD_LINE)]


def test_a_plugin_thread_calls_the_host_on_a_line_of_its_own_that_ends_with_it(
    testplugin: Path, load: Load, worker_core: str
) -> None:
    names: list[str] = []

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        names.append(threading.current_thread().name)
        return answer_ok(plugin_id, method, request)

    plugin = load(testplugin, handler)
    big = {"blob": "y" * 100_000}  # over a ring's slot: on the line's socket, both ways
    for request in ({"n": 1}, big):
        # three host calls in a row from one new thread of the plugin's
        call = {"method": "host.log", "request": request, "times": 3}
        assert result(plugin, "host_thread", call)["request"] == request
    on_line = [n.endswith(THREAD_LINE) for n in names]
    if worker_core != "native-core":
        assert on_line == [False] * 6  # all on the control socket
        return
    # a thread's first host call takes the control socket (a thread that calls once
    # would pay for a line in full); the next ones its own line, which the worker closed
    # as the thread ended, and the host's thread serving it ended too
    assert on_line == [False, True, True] * 2
    assert wait_until(lambda: not _thread_line_threads())


def test_plugin_threads_beyond_the_thread_line_limit_call_on_the_control_socket(
    testplugin: Path, load: Load, worker_core: str
) -> None:
    if worker_core != "native-core":
        pytest.skip("thread lines are the native core's")
    lock = threading.Lock()
    by_thread: dict[str, int] = {}

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        with lock:
            name = threading.current_thread().name
            key = f"{name}/{threading.get_ident()}" if name.endswith(THREAD_LINE) else "other"
            by_thread[key] = by_thread.get(key, 0) + 1
        return env.ok({})

    plugin = load(testplugin, handler)
    # 20 threads each calling host.log every millisecond for about two seconds
    assert result(plugin, "threads_calling_host", {"threads": 20}) == {"started": 20}
    assert wait_until(lambda: by_thread.get("other", 0) > 50)
    lines = [key for key in by_thread if key != "other"]
    assert len(lines) == process_module.THREAD_LINES_MAX  # the first 16 threads'
    assert wait_until(lambda: not _thread_line_threads(), timeout=10.0)
    assert result(plugin, "echo", {"after": True}) == {"after": True}


def test_a_thread_line_the_host_refuses_leaves_its_thread_on_the_control_socket(
    testplugin: Path,
    load: Load,
    worker_core: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if worker_core != "native-core":
        pytest.skip("thread lines are the native core's")
    # The host takes fewer lines than the worker opens: the others are closed unread, and
    # their threads' host calls (the one on the refused line included) go on the socket.
    monkeypatch.setattr(process_module, "_THREAD_LINES_TAKEN", 2)
    lock = threading.Lock()
    seen: dict[str, int] = {"line": 0, "other": 0}

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        with lock:
            seen["line" if threading.current_thread().name.endswith(THREAD_LINE) else "other"] += 1
        return env.ok({})

    plugin = load(testplugin, handler)
    pid = worker_pid(plugin)
    assert result(plugin, "threads_calling_host", {"threads": 4}) == {"started": 4}
    # four threads calling about every millisecond: two on lines, two on the socket
    assert wait_until(lambda: seen["line"] > 200 and seen["other"] > 200)
    assert len(_thread_line_threads()) == 2
    assert worker_pid(plugin) == pid
    assert wait_until(lambda: not _thread_line_threads(), timeout=10.0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_thread_lines_end_when_the_worker_dies_under_them(
    testplugin: Path, load: Load, worker_core: str, caplog: pytest.LogCaptureFixture
) -> None:
    if worker_core != "native-core":
        pytest.skip("thread lines are the native core's")
    first = threading.Lock()
    entered = threading.Event()
    release = threading.Event()

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        on_line = threading.current_thread().name.endswith(THREAD_LINE)
        if on_line and first.acquire(blocking=False):  # never released: one call alone
            entered.set()
            release.wait(10)  # one host call held while its worker is killed
        return env.ok({})

    plugin = load(testplugin, handler)
    pid = worker_pid(plugin)
    assert result(plugin, "threads_calling_host", {"threads": 3}) == {"started": 3}
    assert entered.wait(5)
    assert wait_until(lambda: len(_thread_line_threads()) == 3)
    os.kill(pid, signal.SIGKILL)
    # the dead worker closed no ring: the host aborts them, and the threads waiting for a
    # plugin thread's next call end; the one answering ends once its answer finds the
    # line closed
    assert wait_until(lambda: len(_thread_line_threads()) == 1)
    release.set()
    assert wait_until(lambda: not _thread_line_threads())
    assert wait_until(lambda: worker_pid(plugin) != pid)
    assert plugin.health().restarts == 1
    assert not [r for r in caplog.records if "thread line" in r.getMessage()]


@pytest.mark.parametrize(
    ("via", "before"),
    [("host_fork", 0), ("host_thread_fork", 0), ("host_thread_fork", 3)],
    ids=["call-line", "control-socket", "thread-line"],
)
def test_a_host_call_from_a_child_the_plugin_forked_fails_and_leaves_the_worker_whole(
    testplugin: Path, load: Load, worker_core: str, via: str, before: int
) -> None:
    if worker_core != "native-core":
        pytest.skip("the Python worker core cannot answer a forked child (see docs)")
    # The child shares the worker's lines, its control socket and rings (fork without
    # exec): its host call must not reach the host on them, where its frames would land
    # among the parent's. It is answered an error at once, in the child, and the worker
    # goes on as before: the same process, its host calls (the thread's line included)
    # still answered.
    seen: list[str] = []
    on_line: list[bool] = []

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        seen.append(method)
        on_line.append(threading.current_thread().name.endswith(THREAD_LINE))
        return answer_ok(plugin_id, method, request)

    plugin = load(testplugin, handler)
    pid = worker_pid(plugin)
    with pytest.raises(errors.PluginError) as info:
        result(plugin, via, {"method": "host.log", "request": {"n": 1}, "times": before})
    assert info.value.code == "host_call_failed"
    message = info.value.message
    assert f"plugin {plugin.plugin_id}: host call host.log from a process" in message
    assert "the plugin forked" in message
    assert "exec a program in the child" in message
    assert seen == ["host.log"] * before  # the child's call never reached the host
    if before:
        # The child ended as a thread does, which closes a thread's line; the line it
        # shared with its parent's thread stays the parent's: the calls after it still
        # travel on it.
        seen.clear()
        on_line.clear()
        again = {"method": "host.log", "request": {}, "times": before, "after": 2}
        with pytest.raises(errors.PluginError):
            result(plugin, via, again)
        assert on_line == [False, True, True, True, True]
    for call in ("host", "host_thread"):
        answer = result(plugin, call, {"method": "host.log", "request": {}, "times": 3})
        assert answer["method"] == "host.log"
    assert worker_pid(plugin) == pid
    assert plugin.health().restarts == 0


def test_a_child_the_plugin_forks_during_a_call_does_not_answer_it(
    testplugin: Path, load: Load, worker_core: str
) -> None:
    if worker_core != "native-core":
        pytest.skip("the Python worker core cannot tell a forked child (see docs)")
    # Both processes return from the call: only the worker's answer reaches the host, and
    # the child leaves the line (it exits) instead of reading the calls after it.
    plugin = load(testplugin)
    pid = worker_pid(plugin)
    for _ in range(5):
        assert result(plugin, "fork_and_return", {}) == {"pid": pid, "child_exited": True}
        assert result(plugin, "echo", {"n": 1}) == {"n": 1}
    assert worker_pid(plugin) == pid
    assert plugin.health().restarts == 0


def test_a_ring_passed_by_a_worker_must_be_sealed_at_its_size(worker_core: str) -> None:
    core = host_core()
    if worker_core != "native-core" or core is None:
        pytest.skip("rings are the native core's")
    seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL

    def memfd(size: int, sealed: int) -> int:
        fd = os.memfd_create("test-ring", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, size)
        if sealed:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, sealed)
        return fd

    # one it could still shrink under the host's mapping (SIGBUS), too small, too large
    for size, sealed in (
        (core.ring_size, 0),
        (core.ring_size, fcntl.F_SEAL_GROW),
        (4096, seals),
        (core.ring_size * 2, seals),
    ):
        fd = memfd(size, sealed)
        try:
            with pytest.raises(ValueError, match="sealed"):
                core.map_ring(fd)
        finally:
            os.close(fd)
    fd = memfd(core.ring_size, seals)
    try:
        ring = core.map_ring(fd)
    finally:
        os.close(fd)
    core.ring_unmap(ring)
    # and those the host makes for call lines are sealed so
    ring, fd = core.new_ring()
    try:
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & seals == seals
    finally:
        os.close(fd)
        core.ring_unmap(ring)


def test_a_core_that_does_not_load_leaves_the_worker_serving_in_python(
    testplugin: Path, load: Load, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "linecore-broken.so"
    broken.write_text("not a library")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core_build, "line_core", lambda: broken)
        plugin = load(testplugin, plugin_id="nocore")
        pid = worker_pid(plugin)
    assert result(plugin, "echo", {"x": 1}) == {"x": 1}
    assert not [n for n in _thread_names(pid) if n.startswith("cw-line-")]

    def warned() -> bool:
        return any(
            "cannot load the native line core" in r.getMessage() and str(broken) in r.getMessage()
            for r in caplog.records
        )

    assert wait_until(warned)


# -- where the line's thread runs --------------------------------------------------------


def _line_cpus(pid: int) -> list[set[int]]:
    """The CPUs each of the worker's line threads may run on."""
    allowed = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().startswith("cw-line-"):
                allowed.append(os.sched_getaffinity(int(task.name)))
    return allowed


@contextlib.contextmanager
def on_cpus(cpus: set[int]) -> Iterator[None]:
    """This thread runs on `cpus` only, while the block runs."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _two_cpus(worker_core: str) -> tuple[int, int]:
    if worker_core != "native-core":
        pytest.skip("call lines in Python have no ring to say where the host waits")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    return cpus[0], cpus[1]


def test_a_sleeping_caller_is_answered_from_its_own_cpu(
    testplugin: Path, load: Load, worker_core: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _two_cpus(worker_core)
    everywhere = os.sched_getaffinity(0)
    plugin = load(testplugin, spin_us=50)
    pid = worker_pid(plugin)
    # no CPU spare: the caller sleeps, and the line's thread moves to the caller's CPU
    monkeypatch.setattr(client_module, "spare_cpu", lambda: False)
    for cpu in (first, second, first):
        with on_cpus({cpu}):
            assert result(plugin, "echo", {"on": cpu}) == {"on": cpu}
        assert {cpu} in _line_cpus(pid)
    # the caller's own CPUs are what they were (it is held on its CPU only while it waits)
    assert os.sched_getaffinity(0) == everywhere
    assert result(plugin, "echo", {"unpinned": True}) == {"unpinned": True}
    assert os.sched_getaffinity(0) == everywhere
    # a caller that polls has the thread answer from any CPU again
    monkeypatch.setattr(client_module, "spare_cpu", lambda: True)
    assert result(plugin, "echo", {"polled": True}) == {"polled": True}
    assert _line_cpus(pid) == [everywhere]


def test_a_line_thread_stays_within_the_cpus_its_worker_may_use(
    testplugin: Path, load: Load, worker_core: str
) -> None:
    first, second = _two_cpus(worker_core)
    # the worker starts on the first CPU only (a child keeps its parent's CPUs)
    with on_cpus({first}):
        plugin = load(testplugin, spin_us=0, standby_worker=False)
        pid = worker_pid(plugin)
    assert os.sched_getaffinity(pid) == {first}
    # a caller on the second CPU, which the worker may not use: answered all the same,
    # from where the worker may run
    with on_cpus({second}):
        for i in range(3):
            assert result(plugin, "echo", {"i": i}) == {"i": i}
    assert _line_cpus(pid) == [{first}]


def test_a_method_a_little_slower_than_the_spin_time_is_polled_for_longer() -> None:
    spin = 50e-6
    assert client_module.poll_time(spin, None) == spin  # never called: the spin time
    assert client_module.poll_time(spin, 20e-6) == spin  # answered well within it
    assert client_module.poll_time(spin, 40e-6) == pytest.approx(60e-6)  # and its crossing
    # a 60 us method: polled for half as long again
    assert client_module.poll_time(spin, 60e-6) == pytest.approx(90e-6)
    # up to SPIN_STRETCH_S longer than the spin time
    assert client_module.poll_time(spin, 180e-6) == pytest.approx(200e-6)
    # slower than that: slept on
    assert client_module.poll_time(spin, 250e-6) == 0.0
    assert client_module.poll_time(0.0, 10e-6) == 0.0  # spin-us 0: nobody polls
