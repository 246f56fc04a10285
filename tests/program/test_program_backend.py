"""The program backend on its own: the protocol, many calls at once, host calls, bad programs."""

from __future__ import annotations

import base64
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from cliproxy_host import errors
from cliproxy_host.backends.isolated.limits import IsolationLimits
from cliproxy_host.backends.program.client import ProgramCommand, ProgramPlugin
from cliproxy_host.backends.protocol import State

from ..serverutil import wait_until

ROOT = Path(__file__).resolve().parents[2]
KNOBS = ROOT / "tests" / "plugins" / "programs" / "knobs.py"
FAST = IsolationLimits(
    start_timeout_s=5.0, ping_interval_s=0.3, ping_timeout_s=1.0, max_response_bytes=1 << 20
)
REGISTER = orjson.dumps({"config_yaml": "", "schema_version": 3})


def answer_host(plugin_id: str, method: str, request: bytes) -> bytes:
    """The host side of host calls for these tests: echoes, and one slow method."""
    if method == "host.test.slow":
        time.sleep(0.5)
    if method.startswith("host.test."):
        return orjson.dumps(
            {"ok": True, "result": {"plugin": plugin_id, "echo": orjson.loads(request)}}
        )
    return errors.HostCallFailed(f"unsupported host callback {method}").to_envelope()


def start(env: dict[str, str] | None = None, limits: IsolationLimits = FAST) -> ProgramPlugin:
    command = ProgramCommand((sys.executable, str(KNOBS)), ROOT, env or {})
    return ProgramPlugin("knobs", command, answer_host, limits)


@pytest.fixture
def program() -> Iterator[ProgramPlugin]:
    plugin = start()
    plugin.call("plugin.register", REGISTER, 5)
    yield plugin
    plugin.close(2.0)


def call(plugin: ProgramPlugin, method: str, request: object, timeout: float = 10.0) -> object:
    answer = orjson.loads(plugin.call(method, orjson.dumps(request), timeout))
    assert answer["ok"] is True, answer
    return answer["result"]


def test_a_program_answers_the_abi_envelopes(program: ProgramPlugin) -> None:
    assert call(program, "echo", {"a": [1, "two"]}) == {"a": [1, "two"]}
    unknown = orjson.loads(program.call("nope", b"{}", 5))
    assert unknown["error"]["code"] == "unknown_method"
    assert program.path == KNOBS


def test_the_program_is_told_its_id_and_given_its_cwd_and_env(tmp_path: Path) -> None:
    command = ProgramCommand((sys.executable, str(KNOBS)), tmp_path, {"KNOB_VALUE": "42"})
    plugin = ProgramPlugin("knobs", command, answer_host, FAST)
    try:
        got = call(plugin, "env", {})
    finally:
        plugin.close(2.0)
    assert got == {"cwd": str(tmp_path), "CLIPROXY_PLUGIN_ID": "knobs", "KNOB_VALUE": "42"}


def test_many_calls_are_in_flight_on_one_connection_at_once(program: ProgramPlugin) -> None:
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(call(program, "sleep", {"seconds": 0.5})))
        for _ in range(8)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8
    assert time.monotonic() - started < 2.5  # 8 x 0.5 s one after the other would be 4 s


def test_calls_one_after_another_run_on_the_thread_that_reads_them(
    program: ProgramPlugin,
) -> None:
    # No hand-off between the SDK's threads: the thread that read a call runs it and
    # reads the next one (a thread standing by takes over only from a long call). A
    # call the machine's load stalls for a millisecond is taken over, so a busy machine
    # shows some switches; a hand-off per call would switch on every one of them.
    threads = [str(call(program, "thread", {})) for _ in range(40)]
    switches = sum(a != b for a, b in itertools.pairwise(threads))
    assert switches <= 15, threads


def test_a_long_call_leaves_the_others_and_the_heartbeat_served(program: ProgramPlugin) -> None:
    slow = threading.Thread(target=call, args=(program, "sleep", {"seconds": 2.0}))
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert call(program, "echo", {"quick": True}) == {"quick": True}
    assert program.health().state is State.RUNNING
    assert time.monotonic() - started < 0.5
    slow.join(10)


def test_host_calls_go_both_ways_on_the_same_connection(program: ProgramPlugin) -> None:
    got = call(program, "host", {"method": "host.test.echo", "params": {"x": 1}})
    assert got == {"result": {"plugin": "knobs", "echo": {"x": 1}}}
    refused = call(program, "host", {"method": "host.nope", "params": {}})
    assert refused == {"code": "host_call_failed", "message": "unsupported host callback host.nope"}


def test_a_program_that_exits_mid_call_is_a_crash_and_is_restarted(
    program: ProgramPlugin,
) -> None:
    first = call(program, "pid", {})
    with pytest.raises(errors.PluginCrashed, match="exited with status 3 in crash"):
        program.call("crash", b"{}", 5)
    wait_until(lambda: program.health().state is State.RUNNING)
    assert call(program, "pid", {}) != first
    assert program.health().restarts == 1


def test_a_call_that_overruns_is_abandoned_and_the_others_carry_on(
    program: ProgramPlugin,
) -> None:
    pid = call(program, "pid", {})
    with pytest.raises(errors.PluginTimeout, match=r"did not answer sleep within 0\.2 s"):
        program.call("sleep", orjson.dumps({"seconds": 1}), 0.2)
    assert call(program, "pid", {}) == pid  # the same program: a slow call is not a crash


def test_a_program_that_stops_answering_its_heartbeat_is_killed_and_restarted(
    program: ProgramPlugin,
) -> None:
    first = call(program, "pid", {})
    with pytest.raises(errors.PluginError):
        program.call("freeze", b"{}", 5)
    wait_until(lambda: program.health().restarts >= 1, timeout=10)
    assert "missed a ping" in (program.health().last_error or "")
    wait_until(lambda: program.health().state is State.RUNNING)
    assert call(program, "pid", {}) != first


def test_garbage_on_the_connection_kills_the_program_with_a_clear_reason(
    program: ProgramPlugin,
) -> None:
    with pytest.raises(errors.PluginCrashed, match="broke the protocol: a line that is not JSON"):
        program.call("garbage", b"{}", 5)
    wait_until(lambda: program.health().state is State.RUNNING)
    assert call(program, "echo", {"back": True}) == {"back": True}


def test_a_line_over_the_size_cap_is_a_flood_and_kills_the_program(
    program: ProgramPlugin,
) -> None:
    with pytest.raises(errors.PluginCrashed, match="a line longer than"):
        program.call("flood", orjson.dumps({"chunks": 64}), 10)
    wait_until(lambda: program.health().state is State.RUNNING)
    assert call(program, "echo", {}) == {}


def test_a_flood_of_host_calls_is_answered_busy_beyond_the_cap(program: ProgramPlugin) -> None:
    got = call(program, "host_flood", {"count": 100}, timeout=30)
    assert got == {"busy": 36, "ok": 64}


@pytest.mark.parametrize(
    ("knob", "error", "match"),
    [
        ("silent", errors.PluginLoadError, "did not send rpc.hello within 1 s"),
        ("wrong-id", errors.HandshakeRefused, "said it is plugin 'someone-else'"),
        ("wrong-abi", errors.AbiVersionMismatch, "ABI version 99 is not supported"),
        ("garbage", errors.PluginLoadError, "broke the protocol: a line that is not JSON"),
        ("exit", errors.PluginLoadError, "exited with status 0"),
    ],
)
def test_a_bad_handshake_is_refused_with_a_clear_error(
    knob: str, error: type[errors.PluginError], match: str
) -> None:
    limits = IsolationLimits(start_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(error, match=match) as info:
        start({"KNOB_HELLO": knob}, limits)
    assert info.value.plugin_id == "knobs"
    assert time.monotonic() - started < 6


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_closing_kills_what_the_program_started(program: ProgramPlugin) -> None:
    child = call(program, "child", {})["pid"]  # type: ignore[index]
    assert Path(f"/proc/{child}").exists()
    program.close(2.0)
    wait_until(lambda: not _running(child), timeout=5)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"


def test_program_output_goes_to_the_log_with_the_plugin_id(
    program: ProgramPlugin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="cliproxy_host.plugin.knobs")
    call(program, "print", {"text": "hello from the program"})
    wait_until(
        lambda: any("knobs: hello from the program" in r.getMessage() for r in caplog.records)
    )


def test_memory_limit_applies_to_the_program() -> None:
    limits = IsolationLimits(start_timeout_s=5.0, memory_limit_mb=512)
    plugin = start(limits=limits)
    try:
        pid = call(plugin, "pid", {})["pid"]  # type: ignore[index]
        limit = Path(f"/proc/{pid}/limits").read_text()
    finally:
        plugin.close(2.0)
    assert str(512 * 1024 * 1024) in limit


def test_raw_example_speaks_the_protocol_without_the_sdk() -> None:
    command = ProgramCommand(("sh", "examples/raw/echo.sh"), ROOT)
    plugin = ProgramPlugin("echo-raw", command, answer_host, FAST)
    try:
        registration = call(plugin, "plugin.register", orjson.loads(REGISTER))
        payload = base64.b64encode(b'{"text": "hi"}').decode()
        answer = call(plugin, "executor.execute", {"Payload": payload})
    finally:
        plugin.close(2.0)
    assert registration["capabilities"] == {"executor": True}  # type: ignore[index]
    assert answer == {"Payload": payload, "Headers": {}}


@pytest.mark.parametrize("script", sorted((ROOT / "examples" / "python").glob("*.py")), ids=str)
def test_every_python_example_is_a_runnable_plugin(script: Path) -> None:
    plugin = ProgramPlugin("example", ProgramCommand(("python3", str(script)), ROOT), answer_host)
    try:
        registration = call(plugin, "plugin.register", orjson.loads(REGISTER))
        assert registration["metadata"]["Name"]  # type: ignore[index]
        identifier = call(plugin, "executor.identifier", {})
    finally:
        plugin.close(2.0)
    assert identifier == {"identifier": "example"}  # the configured ID, never hard-coded


def test_the_sdk_imports_nothing_of_the_host() -> None:
    code = (
        "import sys, cliproxy_host.sdk; print(*sorted(m for m in sys.modules if 'cliproxy' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    loaded = {name for name in out.stdout.split() if not name.startswith("cliproxy_host.sdk")}
    # The package's __init__ brings the error tree; nothing else of the host comes along.
    assert loaded == {"cliproxy_host", "cliproxy_host.errors"}
