"""The `cliproxy-host` command: plugins listing and call, with their exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cliproxy_host.cli import main

from .conftest import HostFactory


@pytest.fixture
def config(examples: dict[str, Path], testplugin: Path, host_factory: HostFactory) -> Path:
    for pid, lib in examples.items():
        host_factory.add(pid, lib)
    host_factory.add("tp", testplugin)
    return host_factory.write_config(
        configs={
            "simple-c": {"enabled": True, "priority": 10, "mode": "fast"},
            "simple-rust": {"enabled": True, "priority": 30},
            "tp": {"enabled": True, "priority": 20},
            "http-c": {"enabled": False},
        }
    )


def test_plugins_json_lists_every_field_in_priority_order(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["id"] for p in listed] == ["simple-rust", "tp", "simple-c", "http-c"]
    assert set(listed[0]) == {
        "id",
        "path",
        "version",
        "configured",
        "enabled",
        "registered",
        "loading",
        "priority",
        "metadata",
        "capabilities",
        "error",
        "isolation",
        "state",
        "restarts",
        "last_error",
        "last_signal",
    }
    assert [p["registered"] for p in listed] == [True, True, True, False]


def test_plugins_table_shows_one_row_per_plugin(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["ID", "PRIO", "ENABLED", "REGISTERED"]
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
