"""Progress on long steps: check's live list on a terminal, one line per example built."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from cliproxy_host.check import run_checks
from cliproxy_host.check.report import CheckResult
from cliproxy_host.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_run_checks_hands_each_result_to_progress_as_it_finishes(
    examples: dict[str, Path],
) -> None:
    seen: list[CheckResult] = []
    report = run_checks(examples["simple-c"], progress=seen.append, cycles=2)
    assert seen == list(report.results)


def test_check_shows_a_live_list_on_a_terminal(
    examples: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats the captured stdout as a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    lib = examples["simple-c"]
    assert main(["check", str(lib)]) == 0
    out = capsys.readouterr().out
    summary = re.search(rf"{re.escape(str(lib))}: (\d+) checks", out)
    assert summary is not None, out  # the final report still follows
    # The list was drawn again as each check finished, with that check's line in it.
    for done in range(1, int(summary[1]) + 1):
        assert f"checking {lib}: {done} done" in out
    assert "loads" in out.split(f"checking {lib}: 2 done")[0]


def test_check_is_quiet_when_stdout_is_no_terminal(
    examples: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    lib = examples["simple-c"]
    assert main(["check", str(lib)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "checking" not in out
    assert out.splitlines()[0].split() == ["STATUS", "CHECK", "REASON", "/", "FIX"]


def _build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("examples_build", REPO / "examples" / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_building_the_c_examples_prints_one_line_per_plugin_and_no_tool_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    build = _build_script()
    built = build.build_language("C", tmp_path)
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["simple-c", "C", "ok"],
        ["http-c", "C", "ok"],
        ["echo-c", "C", "ok"],
    ]
    assert all(line.endswith(" s") for line in lines)
    assert "cmake" not in out + err
    assert "Building" not in out + err
    assert set(built) == {"simple-c", "http-c", "echo-c"}


def test_a_failed_build_shows_the_tools_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    build = _build_script()

    def broken(build_dir: Path, *, verbose: bool = False) -> dict[str, Path]:
        build._run(["sh", "-c", "echo 'error: no compiler'; exit 3"], verbose=verbose)
        return {}

    monkeypatch.setitem(build.BUILDERS, "C", (broken, ("simple-c", "http-c")))
    with pytest.raises(build.BuildFailed):
        build.build_language("C", tmp_path)
    out = capfd.readouterr().out
    assert [line.split()[:3] for line in out.splitlines()[:2]] == [
        ["simple-c", "C", "FAILED"],
        ["http-c", "C", "FAILED"],
    ]
    assert "exited 3" in out
    assert "error: no compiler" in out
