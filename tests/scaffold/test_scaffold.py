"""`cliproxy-host new`: projects that build offline, for real, and pass check out of the box."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cliproxy_host.abi import CAPABILITY_METHODS, LIBRARY_SUFFIX, METHOD_CAPABILITY, header_path
from cliproxy_host.callbacks.streams import StreamChunk
from cliproxy_host.check import run_checks
from cliproxy_host.cli import main
from cliproxy_host.discovery import platform_tag
from cliproxy_host.host.facade import PluginHost
from cliproxy_host.scaffold import project as scaffold
from cliproxy_host.scaffold.project import ScaffoldError, create_project

from ..conftest import HostFactory

# `make check` runs this interpreter's cliproxy-host, whatever is on PATH.
CLIPROXY_HOST = f"{sys.executable} -m cliproxy_host.cli"


def make(project: Path, *targets: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUSTFLAGS": "-D warnings"}
    env.pop("CARGO_TARGET_DIR", None)
    cmd = ["make", "-C", str(project), *targets, *(f"{k}={v}" for k, v in variables.items())]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_every_capability_method_has_an_answer() -> None:
    assert set(scaffold._ANSWERS) == set(METHOD_CAPABILITY)


@pytest.mark.parametrize("lang", ["c", "rust"])
def test_new_writes_a_project_with_the_installed_header(tmp_path: Path, lang: str) -> None:
    project = create_project("demo", lang, parent=tmp_path)
    assert project == tmp_path / "demo"
    assert (project / "include" / "cliproxy_plugin.h").read_bytes() == header_path().read_bytes()
    for name in ("Makefile", "README.md"):
        text = (project / name).read_text()
        assert "@@" not in text
        assert "demo" in text
    source = project / ("src/demo.c" if lang == "c" else "src/lib.rs")
    assert '"executor.execute"' in source.read_text()
    assert not list(tmp_path.glob(".demo.*")), "the staging directory is left behind"


def test_new_refuses_to_overwrite_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "keep.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="not empty"):
        create_project("demo", "c", parent=tmp_path)
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["keep.txt"]


def test_new_fills_an_existing_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    assert (create_project("demo", "c", parent=tmp_path) / "Makefile").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["new", ".hidden", "--lang", "c"], "not a valid plugin ID"),
        (["new", "a/b", "--lang", "rust"], "not a valid plugin ID"),
        (["new", "ok", "--lang", "c", "--capability", "teleporter"], "unknown capability"),
    ],
)
def test_new_usage_errors_exit_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([*argv, "--dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_new_prints_the_next_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "demo", "--lang", "rust", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"make -C {tmp_path / 'demo'} check" in out


# -- built for real ----------------------------------------------------------------------------


def test_c_project_builds_checks_and_installs(tmp_path: Path) -> None:
    project = create_project(
        "demo-c",
        "c",
        ["executor", "request_normalizer", "management_api"],
        parent=tmp_path,
    )
    make(project, "build")
    checked = make(project, "check", CLIPROXY_HOST=CLIPROXY_HOST)
    lines = checked.stdout.splitlines()
    assert not [line for line in lines if line.startswith("fail")], checked.stdout
    assert any(line.startswith("pass    method management.handle") for line in lines)

    plugins = tmp_path / "host" / "plugins"
    make(project, "install", PLUGINS_DIR=str(plugins))
    os_name, arch = platform_tag()
    assert (plugins / os_name / arch / f"demo-c{LIBRARY_SUFFIX}").is_file()
    assert not list((plugins / os_name / arch).glob(".*")), "the temp file is left behind"


def test_c_project_with_every_capability_compiles_warning_free_and_passes(tmp_path: Path) -> None:
    project = create_project("every-c", "c", list(CAPABILITY_METHODS), parent=tmp_path)
    library = project / f"every-c{LIBRARY_SUFFIX}"
    cc = shutil.which("cc") or "gcc"
    subprocess.run(
        [
            cc,
            "-std=c11",
            "-shared",
            "-fPIC",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Werror",
            "-I",
            str(project / "include"),
            "-o",
            str(library),
            str(project / "src" / "every-c.c"),
        ],
        check=True,
    )
    report = run_checks(library, cycles=10)
    # Every method of every capability answers ok: no warning, not only no failure.
    assert {r.status for r in report.results} == {"pass"}, report.table()


def test_rust_project_builds_offline_and_passes_check(tmp_path: Path) -> None:
    project = create_project("demo-rust", "rust", ["executor", "management_api"], parent=tmp_path)
    make(project, "build")  # cargo build --offline, with warnings as errors
    report = run_checks(project / "build" / f"demo-rust{LIBRARY_SUFFIX}")
    assert {r.status for r in report.results} == {"pass"}, report.table()


@pytest.mark.parametrize("lang", ["c", "rust"])
def test_new_executor_streams_asynchronously_in_a_real_host_and_passes_check(
    tmp_path: Path, host_factory: HostFactory, lang: str
) -> None:
    name = f"async-{lang}"
    project = create_project(name, lang, ["executor"], parent=tmp_path / "projects")
    make(project, "build")  # CMake for C; cargo build --offline for Rust
    library = project / "build" / f"{name}{LIBRARY_SUFFIX}"

    host_factory.add(name, library)
    host_factory.write_config(configs={name: {"enabled": True}})
    payload = base64.b64encode(b'{"text":"hello"}').decode()
    with PluginHost.from_config(host_factory.config_path) as host:
        stream = host.call_stream(name, "executor.execute_stream", {"Payload": payload})
        with stream:
            assert stream.headers == {"X-Plugin": [name]}
            chunks = list(stream)
        # The answer had no chunks: these came through host.stream.emit, then the close.
        assert chunks == [StreamChunk(b'{"text":"hello"}'), StreamChunk(b'{"done":true}')]
        assert len(host.scopes) == 0  # the stream's scope ended with it

    report = run_checks(library, cycles=10)
    assert {r.status for r in report.results} == {"pass"}, report.table()
    results = {r.name: r for r in report.results}
    assert "async streams" in results["async stream"].reason
    assert "closed with host.stream.close" in results["async stream"].reason
