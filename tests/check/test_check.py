"""`cliproxy-host check`: the examples pass, each broken plugin fails the check it breaks."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from cliproxy_host.abi import HostHandler
from cliproxy_host.backends.isolated import client
from cliproxy_host.backends.native import NativePlugin
from cliproxy_host.backends.protocol import Health
from cliproxy_host.check import CheckResult, Report, limits, run_checks, suite
from cliproxy_host.check.run import Run
from cliproxy_host.cli import main
from cliproxy_host.envelope import error, ok
from cliproxy_host.errors import PluginCallFailed, PluginCrashed, PluginError

from ..conftest import CompilePlugin

LOAD_STEPS = ["loads", "exports init", "init returns 0", "ABI version", "function table"]
REGISTRATION: dict[str, Any] = {
    "schema_version": 1,
    "metadata": {
        "Name": "fake",
        "Version": "1.0.0",
        "Author": "tests",
        "GitHubRepository": "https://example.invalid/fake",
    },
    "capabilities": {"executor": True},
}


def by_name(report: Report) -> dict[str, CheckResult]:
    return {r.name: r for r in report.results}


def failures(report: Report) -> list[str]:
    return [r.name for r in report.results if r.status == "fail"]


# -- the project's own plugins -----------------------------------------------------------------


@pytest.mark.parametrize("plugin_id", ["simple-c", "http-c", "simple-rust"])
def test_every_example_passes_in_process(examples: dict[str, Path], plugin_id: str) -> None:
    started = time.monotonic()
    report = run_checks(examples[plugin_id])
    # The goal is under 5 s (the report prints its run time); CI machines are noisy.
    assert time.monotonic() - started < 20
    assert not report.failed, report.table()
    results = by_name(report)
    for name in [
        *LOAD_STEPS,
        "registration",
        "reconfigure",
        "method executor.identifier",
        "method executor.execute",
        "unknown method",
        "concurrency",
        "1 MiB request",
        "load/unload cycles",
        "UTF-8 JSON",
    ]:
        assert results[name].status == "pass", report.table()
    if plugin_id == "http-c":
        # base_url is a string ConfigField: the check sets a URL, so execute calls the
        # host, whose answers are local.
        assert "base_url" in results["reconfigure"].reason
        assert results["host callbacks"].status == "pass"
        assert "host.http.do" in results["host callbacks"].reason


def test_a_declared_method_answering_unknown_method_is_a_warning(testplugin: Path) -> None:
    report = run_checks(testplugin)
    assert not report.failed, report.table()
    tokens = by_name(report)["method executor.count_tokens"]
    assert tokens.status == "warn"
    assert "declares executor but executor.count_tokens answers unknown_method" in tokens.reason
    assert "stop declaring executor" in tokens.fix


# -- deliberately broken plugins ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "failing"),
    [
        ({"TP_NO_INIT": True}, "exports init"),
        ({"TP_INIT_RC": 7}, "init returns 0"),
        ({"TP_ABI_VERSION": 2}, "ABI version"),
        ({"TP_NULL_CALL": True}, "function table"),
        ({"TP_NULL_FREE": True}, "function table"),
    ],
)
def test_a_plugin_that_does_not_initialise_fails_the_step_it_breaks(
    compile_plugin: CompilePlugin, knobs: dict[str, Any], failing: str
) -> None:
    report = run_checks(compile_plugin(**knobs))
    assert failures(report) == [failing], report.table()
    results = by_name(report)
    step = LOAD_STEPS.index(failing)
    assert [results[n].status for n in LOAD_STEPS[:step]] == ["pass"] * step
    assert results[failing].fix
    # Nothing that needs a loaded plugin ran.
    after = report.results[report.results.index(results[failing]) + 1 :]
    assert {r.status for r in after} == {"skip"}


@pytest.mark.parametrize(
    ("registration", "reason"),
    [
        ({**REGISTRATION, "metadata": {"Name": "x"}}, "metadata.version"),
        ({**REGISTRATION, "capabilities": {"executor": False}}, "no capability flag"),
        ({**REGISTRATION, "schema_version": 9}, "schema_version 9 is newer"),
        (
            {
                **REGISTRATION,
                "metadata": {
                    **REGISTRATION["metadata"],
                    "ConfigFields": [{"Name": "mode", "Type": "colour"}],
                },
            },
            "configfields",
        ),
    ],
)
def test_an_invalid_registration_fails_registration(
    compile_plugin: CompilePlugin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    registration: dict[str, Any],
    reason: str,
) -> None:
    monkeypatch.setattr(limits, "CONCURRENCY_SECONDS", 0.1)
    answer = tmp_path / "registration.json"
    answer.write_bytes(orjson.dumps(registration))
    report = run_checks(compile_plugin(TP_REGISTRATION_FILE=answer), cycles=2)
    assert failures(report) == ["registration"], report.table()
    assert reason in by_name(report)["registration"].reason.lower()
    assert by_name(report)["capability methods"].status == "skip"


def test_a_file_that_is_not_a_library_fails_loads(tmp_path: Path) -> None:
    fake = tmp_path / "fake.so"
    fake.write_text("not a library")
    report = run_checks(fake)
    assert failures(report) == ["loads"]
    assert "fake.so" in by_name(report)["loads"].reason


def test_a_missing_file_fails_loads(tmp_path: Path) -> None:
    report = run_checks(tmp_path / "missing.so")
    assert failures(report) == ["loads"]
    assert "does not exist" in by_name(report)["loads"].reason


# -- misbehaviour a C test plugin cannot produce on demand: a backend in Python ------------------

Answer = bytes | Callable[[HostHandler, bytes], bytes] | PluginError


class FakePlugin:
    """A backend answering from a table, so that each misbehaviour is one entry."""

    answers: ClassVar[dict[str, Answer]] = {}

    def __init__(self, plugin_id: str, path: Path, handler: HostHandler) -> None:
        self.plugin_id = plugin_id
        self.path = path
        self.handler = handler

    def call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        answer = self.answers.get(method)
        if answer is None:
            return error("unknown_method", f"unknown method: {method}")
        if isinstance(answer, PluginError):
            raise answer
        if callable(answer):
            return answer(self.handler, request)
        return answer

    def close(self) -> None:
        pass

    def health(self) -> Health:
        return Health()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Report]:
    """run_checks against FakePlugin with the given answers (plus a valid registration)."""
    monkeypatch.setattr(limits, "CONCURRENCY_SECONDS", 0.1)
    path = tmp_path / "fake.so"
    path.write_bytes(b"")

    def run(**answers: Answer) -> Report:
        table = {
            "plugin.register": ok(REGISTRATION),
            "plugin.reconfigure": ok(REGISTRATION),
            "executor.identifier": ok({"identifier": "fake"}),
            **{k.replace("__", "."): v for k, v in answers.items()},
        }
        factory = type("Fake", (FakePlugin,), {"answers": table})
        monkeypatch.setattr(suite, "backend_factory", lambda isolated: factory)
        return run_checks(path, cycles=2)

    return run


def test_a_response_that_is_not_json_fails_the_method_and_utf8_json(
    fake: Callable[..., Report],
) -> None:
    report = fake(executor__execute=b"this is not json", executor__count_tokens=b'"\xff"')
    assert failures(report) == [
        "method executor.execute",
        "method executor.count_tokens",
        "UTF-8 JSON",
    ]
    assert "not JSON" in by_name(report)["method executor.execute"].reason
    assert "not UTF-8" in by_name(report)["method executor.count_tokens"].reason


def test_a_non_zero_return_without_an_envelope_fails(fake: Callable[..., Report]) -> None:
    broken = PluginCallFailed("plugin call executor.execute returned 4: boom")
    report = fake(executor__execute=broken)
    assert failures(report) == ["method executor.execute"]
    assert "no error envelope" in by_name(report)["method executor.execute"].reason


def test_a_crash_fails_the_method_and_skips_what_needs_the_plugin(
    fake: Callable[..., Report],
) -> None:
    report = fake(executor__execute=PluginCrashed("worker died of SIGSEGV"))
    assert failures(report) == ["method executor.execute"]
    results = by_name(report)
    assert "SIGSEGV" in results["method executor.execute"].reason
    assert results["method executor.count_tokens"].status == "skip"
    assert results["unknown method"].reason == "skipped: the plugin crashed in executor.execute"


def test_an_unknown_method_answered_ok_fails(fake: Callable[..., Report]) -> None:
    report = fake(check__no_such_method=ok({}))
    assert failures(report) == ["unknown method"]


def test_answers_that_change_under_concurrency_fail(fake: Callable[..., Report]) -> None:
    calls = iter(range(1_000_000))

    def flaky(handler: HostHandler, request: bytes) -> bytes:
        # Every call after the first answers an error: shared state gone wrong.
        return ok({"Payload": ""}) if next(calls) == 0 else error("internal", "torn state")

    report = fake(executor__execute=flaky)
    assert failures(report) == ["concurrency"]
    assert "changed under load" in by_name(report)["concurrency"].reason


def test_malformed_host_calls_fail_and_never_reach_the_network(
    fake: Callable[..., Report],
) -> None:
    seen: list[bytes] = []

    def calls_host(handler: HostHandler, request: bytes) -> bytes:
        seen.append(handler("fake", "host.http.do", b'{"url": "https://example.com/"}'))
        handler("fake", "host.http.do", b'{"url": "ftp://example.com/", "body": "%%"}')
        handler("fake", "host.log", b"not json")
        return ok({"Payload": ""})

    report = fake(executor__execute=calls_host)
    host_calls = by_name(report)["host callbacks"]
    assert host_calls.status == "fail"
    assert "not an absolute http or https URL" in host_calls.reason
    assert "body is not a base64 string" in host_calls.reason
    # The well-formed request got the fixed local answer.
    assert orjson.loads(seen[0])["result"]["StatusCode"] == 200


def test_registration_quirks_and_refused_sample_config_are_warnings(
    fake: Callable[..., Report],
) -> None:
    quirky = {
        **REGISTRATION,
        "metadata": {
            **REGISTRATION["metadata"],
            "ConfigFields": [{"Name": "mode", "Type": "enum"}],
        },
        "capabilities": {"executor": True, "teleporter": True},
    }

    def reconfigure(handler: HostHandler, request: bytes) -> bytes:
        yaml = base64.b64decode(orjson.loads(request)["config_yaml"])
        if b"mode" in yaml:
            return error("invalid_config", "mode must be safe or fast")
        return ok(quirky)

    report = fake(plugin__register=ok(quirky), plugin__reconfigure=reconfigure)
    assert not report.failed, report.table()
    results = by_name(report)
    assert results["registration"].status == "warn"
    assert "enum without EnumValues" in results["registration"].reason
    assert "unknown capability flag 'teleporter'" in results["registration"].reason
    assert results["reconfigure"].status == "warn"
    assert "mode must be safe or fast" in results["reconfigure"].reason


def test_the_isolated_worker_times_out_before_the_checker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[Any] = []

    def plugin(plugin_id: str, path: Path, handler: HostHandler, config: Any) -> Any:
        made.append((plugin_id, path, config))
        return object()

    monkeypatch.setattr(client, "IsolatedPlugin", plugin)
    suite.backend_factory(True)("p", tmp_path / "p.so", lambda *_: b"")
    [(plugin_id, path, config)] = made
    assert (plugin_id, path) == ("p", tmp_path / "p.so")
    assert config.start_timeout_s == limits.LOAD_TIMEOUT
    assert suite.backend_factory(False) is NativePlugin


def test_each_call_hands_its_timeout_to_the_backend(tmp_path: Path) -> None:
    # An isolated backend kills a worker whose call overruns the timeout it is handed,
    # before the checker's own, slacker, bound gives up on the call.
    seen: list[float | None] = []

    class Recorder:
        def call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
            seen.append(timeout)
            return ok({})

    run = Run(tmp_path / "p.so", NativePlugin, True, 1)
    run.exchange(Recorder(), "m", b"{}")  # type: ignore[arg-type]
    run.exchange(Recorder(), "m", b"{}", 2.5)  # type: ignore[arg-type]
    assert seen == [limits.CALL_TIMEOUT, 2.5]
    assert run.slack > 0


CRASHY = r"""
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

static int crashy_call(const char* method, const uint8_t* request, size_t len,
                       cliproxy_buffer* response) {
    (void)request;
    (void)len;
    cpx_buf out = {0};
    if (strcmp(method, "plugin.register") == 0 || strcmp(method, "plugin.reconfigure") == 0) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{\"metadata\":{\"Name\":\"crashy\","
                           "\"Version\":\"1\",\"Author\":\"tests\",\"GitHubRepository\":"
                           "\"https://example.invalid\"},\"capabilities\":{\"executor\":true}}}");
    } else if (strcmp(method, "executor.execute") == 0) {
#ifdef CRASHY_HANG
        sleep(60);
#else
        abort();
#endif
    } else {
        cpx_unknown_method(&out, method);
    }
    return cpx_respond(&out, response, 0);
}

static void crashy_free(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,
                                         cliproxy_plugin_api* plugin) {
    (void)host;
    plugin->abi_version = 1;
    plugin->call = crashy_call;
    plugin->free_buffer = crashy_free;
    return 0;
}
"""


@pytest.fixture
def crashy(compile_plugin: CompilePlugin, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source of a plugin whose executor.execute aborts (or, with CRASHY_HANG, hangs)."""
    source = tmp_path_factory.mktemp("crashy") / "crashy.c"
    source.write_text(CRASHY)
    return source


def test_isolated_mode_reports_a_crash_and_the_checker_survives(
    compile_plugin: CompilePlugin, crashy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--isolated", str(compile_plugin(source=crashy))]) == 1
    out = capsys.readouterr().out
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("fail")] == [
        ["fail", "method", "executor.execute"]
    ]
    assert "crashed" in out
    assert "skipped: the plugin crashed in executor.execute" in out


def test_isolated_mode_reports_a_hang_as_a_timeout(
    compile_plugin: CompilePlugin, crashy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "CALL_TIMEOUT", 1.0)
    report = run_checks(compile_plugin(source=crashy, CRASHY_HANG=True), isolated=True)
    assert failures(report) == ["method executor.execute"], report.table()
    assert by_name(report)["unknown method"].status == "skip"


@pytest.mark.parametrize(
    ("knobs", "failing"),
    [({}, None), ({"TP_NO_INIT": True}, "exports init"), ({"TP_INIT_RC": 4}, "init returns 0")],
)
def test_isolated_mode_names_the_same_checks(
    compile_plugin: CompilePlugin, knobs: dict[str, Any], failing: str | None
) -> None:
    report = run_checks(compile_plugin(TP_WITH_SHUTDOWN=True, **knobs), isolated=True)
    assert failures(report) == ([failing] if failing else []), report.table()
    if failing is None:
        cycles = by_name(report)["load/unload cycles"].reason
        assert "each in a new worker process" in cycles


# -- the command line ---------------------------------------------------------------------------


def test_check_prints_a_table_and_exits_zero_for_a_good_plugin(
    examples: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(examples["simple-c"])]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "REASON", "/", "FIX"]
    assert any(line.startswith("pass    loads") for line in lines)
    assert " 0 fail" in out
    assert "use --isolated for untrusted binaries" in out


def test_check_json_is_a_list_of_results_and_a_failure_exits_one(
    compile_plugin: CompilePlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(compile_plugin(TP_INIT_RC=3)), "--json"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert isinstance(results, list)
    assert {tuple(sorted(r)) for r in results} == {("fix", "name", "reason", "seconds", "status")}
    assert {r["status"] for r in results} <= {"pass", "fail", "warn", "skip"}
    assert [r["name"] for r in results if r["status"] == "fail"] == ["init returns 0"]


def test_check_of_a_missing_file_exits_one_not_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(tmp_path / "nope.so")]) == 1
    assert "fail    loads" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["check"], ["check", "a.so", "--bogus"]])
def test_check_usage_errors_exit_two(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


# -- async streams, callback scopes, executor formats (issue 12) ----------------------------------

CHECKSTREAM_SRC = Path(__file__).resolve().parent.parent / "plugins" / "checkstream.c"


@pytest.fixture
def short_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream left open is reported after 0.5 s instead of 2 s."""
    monkeypatch.setattr(limits, "STREAM_CLOSE_TIMEOUT", 0.5)


def test_an_async_executor_that_closes_its_streams_passes(compile_plugin: CompilePlugin) -> None:
    report = run_checks(compile_plugin(CHECKSTREAM_SRC), cycles=3)
    assert not report.failed, report.table()
    results = by_name(report)
    stream = results["async stream"]
    assert stream.status == "pass", report.table()
    assert "chunks through host.stream.emit" in stream.reason
    assert results["method executor.execute_stream"].status == "pass", report.table()
    assert results["callback scopes"].status == "pass", report.table()
    assert results["executor formats"].status == "pass", report.table()
    assert "executor_input_formats: openai" in results["executor formats"].reason


@pytest.mark.parametrize(
    ("knob", "reason", "fix"),
    [
        (
            "CS_NEVER_CLOSE",
            "was not closed within 0.5 s of its last chunk, while the plugin made no other "
            "host.stream call (3 chunks emitted)",
            "host.stream.close",
        ),
        ("CS_EMIT_AFTER_CLOSE", "host.stream.emit on stream", "emit nothing after"),
        ("CS_BAD_BASE64", "'payload' is not valid base64", "standard base64"),
        ("CS_WRONG_STREAM_ID", "stream_id '999999', which no", 'the "stream_id" of the'),
    ],
)
def test_a_misused_async_stream_fails_the_async_stream_check(
    compile_plugin: CompilePlugin, short_streams: None, knob: str, reason: str, fix: str
) -> None:
    report = run_checks(compile_plugin(CHECKSTREAM_SRC, **{knob: True}), cycles=3)
    assert failures(report) == ["async stream"], report.table()
    stream = by_name(report)["async stream"]
    assert reason in stream.reason, stream.reason
    assert fix in stream.fix, stream.fix
    if knob == "CS_EMIT_AFTER_CLOSE":
        assert "after the plugin's host.stream.close" in stream.reason


def test_a_host_call_without_the_host_callback_id_is_a_warning(
    compile_plugin: CompilePlugin,
) -> None:
    report = run_checks(compile_plugin(CHECKSTREAM_SRC, CS_NO_ECHO=True), cycles=3)
    assert not report.failed, report.table()
    scopes = by_name(report)["callback scopes"]
    assert scopes.status == "warn", report.table()
    assert "host.log during executor.execute has no host_callback_id" in scopes.reason
    assert "fresh scope" in scopes.reason
    assert 'copy the request\'s "host_callback_id"' in scopes.fix


def test_an_executor_without_formats_is_a_warning_naming_the_flags(
    compile_plugin: CompilePlugin,
) -> None:
    report = run_checks(compile_plugin(CHECKSTREAM_SRC, CS_NO_FORMATS=True), cycles=3)
    assert not report.failed, report.table()
    formats = by_name(report)["executor formats"]
    assert formats.status == "warn", report.table()
    assert "executor_input_formats and no executor_output_formats" in formats.reason
    assert 'executor_input_formats: ["openai"], executor_output_formats: ["openai"]' in formats.fix


def test_the_async_stream_check_runs_isolated_too(
    compile_plugin: CompilePlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The well-behaved run keeps the real timeout: a loaded machine delays a worker's closes.
    good = run_checks(compile_plugin(CHECKSTREAM_SRC), isolated=True, cycles=1)
    assert by_name(good)["async stream"].status == "pass", good.table()
    monkeypatch.setattr(limits, "STREAM_CLOSE_TIMEOUT", 0.5)
    bad = run_checks(
        compile_plugin(CHECKSTREAM_SRC, CS_EMIT_AFTER_CLOSE=True), isolated=True, cycles=1
    )
    assert failures(bad) == ["async stream"], bad.table()


def test_a_plugin_that_leaks_a_file_per_load_is_warned_about(compile_plugin: CompilePlugin) -> None:
    report = run_checks(compile_plugin(TP_WITH_SHUTDOWN=True, TP_LEAK_FD=True), cycles=10)
    cycles = by_name(report)["load/unload cycles"]
    assert cycles.status == "warn", report.table()
    assert "more open file descriptors" in cycles.reason
    assert "shutdown must stop the threads and close the files" in cycles.fix
