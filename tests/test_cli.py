"""The `cliproxy-host` command: plugins listing and call, with their exit codes."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.cli import main
from cliproxy_host.host.facade import PluginHost

from .conftest import HostFactory
from .host.streamutil import STREAMPLUGIN_SRC
from .serverutil import run_server

CONFIGS: dict[str, dict[str, Any]] = {
    "simple-c": {"enabled": True, "priority": 10, "mode": "fast"},
    "simple-rust": {"enabled": True, "priority": 30},
    "tp": {"enabled": True, "priority": 20},
    "http-c": {"enabled": False},
}
BROKEN = "a-plugin-with-a-long-name-that-fails"


@pytest.fixture
def config(examples: dict[str, Path], testplugin: Path, host_factory: HostFactory) -> Path:
    for pid, lib in examples.items():
        host_factory.add(pid, lib)
    host_factory.add("tp", testplugin)
    return host_factory.write_config(configs=CONFIGS)


def test_plugins_json_is_the_rest_list_with_the_go_hosts_names(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 11: one naming, one source. It was an array of PluginInfo (PascalCase metadata,
    # priority order); it is now the body of GET /v0/management/plugins.
    assert main(["plugins", "--config", str(config), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    # The Go host's three keys, and plugins_dir_error (issue 11: an unusable plugins dir is
    # an error in the list), null while the dir is usable; config_store (issue 18: a shared
    # config store's link), null with the YAML file alone.
    assert set(listing) == {
        "plugins_enabled",
        "plugins_dir",
        "plugins_dir_error",
        "config_store",
        "plugins",
    }
    assert listing["plugins_dir_error"] is None
    assert listing["config_store"] is None
    listed = listing["plugins"]
    assert [p["id"] for p in listed] == ["http-c", "simple-c", "simple-rust", "tp"]
    assert {"effective_enabled", "supports_oauth", "config_fields", "menus"} <= set(listed[0])
    simple_c = listed[1]
    assert set(simple_c["metadata"]) == {
        "name",
        "version",
        "author",
        "github_repository",
        "logo",
        "config_fields",
    }
    assert [p["registered"] for p in listed] == [False, True, True, True]


def test_plugins_json_entries_equal_the_rest_api_entries(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins", "--config", str(config), "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    with run_server(config) as server:
        assert server.service.wait_ready(30)
        from_api = server.client.get("/v0/management/plugins").json()
    # Only a server signs resource links (with a key of its run): the CLI lists the paths.
    signed = [link for p in from_api["plugins"] for link in p["resource_links"]]
    assert signed
    assert all(link["url"].startswith(link["path"] + "?exp=") for link in signed)
    for link in signed:
        link["url"] = link["expires_at"] = None
    assert from_cli["plugins"] == from_api["plugins"]
    assert from_cli == from_api


def test_the_version_is_the_file_names_else_the_registered_one(
    examples: dict[str, Path], host_factory: HostFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    host_factory.add("simple-c", examples["simple-c"])  # unversioned file: Version 1.0.0
    host_factory.add("simple-rust", examples["simple-rust"], version="2.5.0")
    config = host_factory.write_config(
        configs={"simple-c": {"enabled": True}, "simple-rust": {"enabled": True}}
    )
    assert main(["plugins", "--config", str(config), "--json"]) == 0
    listed = {p["id"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert listed["simple-c"]["metadata"]["version"] == "1.0.0"
    assert listed["simple-c"]["version"] == "1.0.0"
    assert listed["simple-rust"]["version"] == "2.5.0"
    assert main(["plugins", "--config", str(config)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["simple-c"][1] == "1.0.0"
    assert rows["simple-rust"][1] == "2.5.0"


@pytest.fixture
def long_error_config(config: Path, host_factory: HostFactory) -> Path:
    """The usual plugins plus one that fails to load with a long message."""
    (host_factory.arch_dir / f"{BROKEN}{LIBRARY_SUFFIX}").write_bytes(b"not a library " * 8)
    return host_factory.write_config(configs={**CONFIGS, BROKEN: {"enabled": True}})


def test_plugins_table_fits_a_narrow_terminal(
    long_error_config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["plugins", "--config", str(long_error_config)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "\x1b" not in out  # not a terminal: plain text
    assert max(len(line) for line in lines) <= 80, out
    assert lines[0].split() == ["ID", "VERSION", "PRIO", "ENABLED", "STATE", "ERROR"]
    broken = next(line for line in lines if line.startswith(BROKEN))
    assert "not loaded" in broken
    assert broken.endswith("…")


def test_plugins_wide_shows_every_column_and_the_whole_error(
    long_error_config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["plugins", "--config", str(long_error_config), "--json"]) == 0
    entries = {p["id"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    error = entries[BROKEN]["error"]
    assert error
    assert main(["plugins", "--config", str(long_error_config), "--wide"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "VERSION",
        "PRIO",
        "ENABLED",
        "STATE",
        "ISOLATION",
        "CAPABILITIES",
        "PATH",
        "ERROR",
    ]
    broken = next(line for line in lines if line.startswith(BROKEN))
    assert error.removeprefix(f"plugin {BROKEN}: ") in broken
    assert entries["simple-c"]["path"] in out
    assert all(line == line.rstrip() for line in lines)


def test_plugins_table_shows_one_row_per_plugin(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["ID", "VERSION", "PRIO", "ENABLED", "STATE"]
    assert [line.split()[0] for line in lines[1:]] == ["simple-rust", "tp", "simple-c", "http-c"]


def test_call_prints_the_ok_envelope_and_exits_zero(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["call", "simple-c", "executor.identifier", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "result": {"identifier": "simple-c"}}


def test_call_prints_an_error_envelope_and_exits_one(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["call", "tp", "rc_with_envelope", "{}", "--config", str(config)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert out["error"]["code"] == "quota_exceeded"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["call", "ghost", "echo"], "no plugin file with ID 'ghost'"),
        (["call", "http-c", "echo"], "plugins.configs.http-c.enabled: true"),
        (["call", "tp", "echo", "{not json"], "request is not valid JSON"),
    ],
)
def test_usage_and_load_errors_exit_two(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([*argv, "--config", str(config)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("request_text", ["[1,2]", '"text"', "3", "null", "{not json"])
def test_a_request_that_is_no_json_object_is_a_usage_error_and_reaches_no_plugin(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request_text: str,
) -> None:
    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the request was sent to the plugin")

    monkeypatch.setattr(PluginHost, "call", never)
    assert main(["call", "tp", "echo", request_text, "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "pass a JSON object, e.g. '{}'" in captured.err


def test_a_config_error_names_the_line_and_exits_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("plugins:\n  enabled: true\n  configs:\n    tp:\n      priority: high\n")
    assert main(["plugins", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "plugins.configs.tp.priority" in err
    assert ":5" in err


def test_console_script_runs_as_a_separate_process(config: Path) -> None:
    exe = shutil.which("cliproxy-host")
    cmd = [exe] if exe else [sys.executable, "-m", "cliproxy_host.cli"]
    done = subprocess.run(
        [
            *cmd,
            "call",
            "simple-rust",
            "request.normalize",
            '{"Body": "YWJj"}',
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True, "result": {"Body": "QUJD"}}


def test_call_prints_a_stream_one_json_line_per_chunk_as_it_arrives(
    compile_plugin: Any, host_factory: HostFactory
) -> None:
    host_factory.add("sp", compile_plugin(STREAMPLUGIN_SRC))
    config = host_factory.write_config(configs={"sp": {"enabled": True}})
    request = json.dumps({"count": 3, "interval_us": 400_000})
    cmd = [sys.executable, "-m", "cliproxy_host.cli", "call", "sp", "executor.execute_stream"]
    with subprocess.Popen(
        [*cmd, request, "--config", str(config)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        headers = json.loads(proc.stdout.readline())
        first = json.loads(proc.stdout.readline())
        # The first chunk is printed while the plugin is still emitting the others.
        assert proc.poll() is None
        rest = [json.loads(line) for line in proc.stdout]
        assert proc.wait(timeout=30) == 0
    assert headers["headers"]["X-Mode"] == ["async"]
    payloads = [base64.b64decode(c["payload"]) for c in [first, *rest]]
    assert payloads == [b"t0-0", b"t0-1", b"t0-2"]


def test_call_stream_error_chunk_exits_one(
    compile_plugin: Any, host_factory: HostFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    host_factory.add("sp", compile_plugin(STREAMPLUGIN_SRC))
    config = host_factory.write_config(configs={"sp": {"enabled": True}})
    request = json.dumps({"count": 2, "close_error": "quota"})
    args = ["call", "sp", "executor.execute_stream", request, "--config", str(config)]
    assert main(args) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[1:] == [
        {"payload": "dDAtMA=="},
        {"payload": "dDAtMQ=="},
        {"payload": "", "error": "quota"},
    ]
