"""The author's tools for plugin programs: `check --command` and `new --lang python`."""

from __future__ import annotations

import base64
import shutil
import sys
from pathlib import Path

import pytest

from cliproxy_host.check import run_checks
from cliproxy_host.cli import main
from cliproxy_host.host.facade import PluginHost
from cliproxy_host.host.stream import StreamChunk
from cliproxy_host.scaffold.project import create_project

from ..conftest import HostFactory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "python" / "echo_plugin.py"
KNOBS = ROOT / "tests" / "plugins" / "programs" / "knobs.py"


def test_check_command_runs_the_suite_on_a_program(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["check", "--command", f"{sys.executable} {EXAMPLE}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "pass    loads" in out
    assert "said rpc.hello" in out
    assert "pass    method executor.execute " in out


def test_check_command_reports_a_program_that_refuses_the_handshake(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KNOB_HELLO", "wrong-abi")
    code = main(["check", "--command", f"{sys.executable} {KNOBS}"])
    out = capsys.readouterr().out
    assert code == 1
    assert "ABI version 99 is not supported" in out


def test_check_needs_a_file_or_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "a.so", "--command", "python3 p.py"])
    assert info.value.code == 2
    assert "give a plugin file or --command, not both" in capsys.readouterr().err


def test_new_python_project_passes_check_and_streams_in_a_real_host(
    tmp_path: Path, host_factory: HostFactory
) -> None:
    project = create_project("demo-py", "python", ["executor"], parent=tmp_path / "projects")
    assert sorted(p.name for p in project.iterdir()) == ["Makefile", "README.md", "plugin.py"]
    report = run_checks(command=[sys.executable, str(project / "plugin.py")], cycles=3)
    assert {r.status for r in report.results} <= {"pass", "skip"}, report.table()

    scripts = host_factory.root / "demo"
    shutil.copytree(project, scripts)
    host_factory.write_config(
        configs={
            "demo-py": {"enabled": True, "command": [sys.executable, "plugin.py"], "cwd": "demo"}
        }
    )
    payload = base64.b64encode(b'{"text":"hello"}').decode()
    with PluginHost.from_config(host_factory.config_path) as host:
        assert host.dispatch("executor.identifier", {}) == {"identifier": "demo-py"}
        stream = host.call_stream("demo-py", "executor.execute_stream", {"Payload": payload})
        with stream:
            chunks = list(stream)
    assert chunks == [StreamChunk(b'{"text":"hello"}'), StreamChunk(b'{"done":true}')]
