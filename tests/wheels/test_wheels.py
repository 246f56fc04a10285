"""A Rust plugin built by maturin as a wheel, installed in a throwaway venv, found through
the `cliproxy_host.plugins` entry point and called by the host there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import orjson
import pytest

from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.cli import main
from cliproxy_host.discovery import PluginFile, discover
from cliproxy_host.scaffold.project import ScaffoldError, create_project
from cliproxy_host.wheels import scan_wheels

BIN = Path(sys.executable).parent
MATURIN = BIN / "maturin"
needs_maturin = pytest.mark.skipif(
    not MATURIN.exists() or shutil.which("cargo") is None, reason="needs maturin and cargo"
)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("CARGO_TARGET_DIR", None)
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=False, timeout=600, **kwargs
    )  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
    return done  # type: ignore[no-any-return]


def test_new_with_wheel_writes_the_maturin_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", "my.plugin", "--lang", "rust", "--wheel", "--dir", str(tmp_path)]) == 0
    assert "make -C" in capsys.readouterr().out
    project = tmp_path / "my.plugin"
    pyproject = (project / "pyproject.toml").read_text()
    assert '[project.entry-points."cliproxy_host.plugins"]' in pyproject
    assert '"my.plugin" = "my_plugin"' in pyproject
    assert 'bindings = "cffi"' in pyproject
    assert (project / "cbindgen.toml").is_file()
    makefile = (project / "Makefile").read_text()
    assert "wheel:" in makefile
    assert "--offline" in makefile
    assert "@@" not in makefile + pyproject + (project / "README.md").read_text()


def test_wheel_is_for_rust_only(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="--wheel is for Rust"):
        create_project("x", "c", parent=tmp_path, wheel=True)
    assert not (tmp_path / "x").exists()


def test_a_plugin_from_a_wheel_ranks_after_the_plugins_dir_by_the_same_rules(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    root.mkdir()
    (root / f"p-v1.0{LIBRARY_SUFFIX}").write_bytes(b"")
    wheel = PluginFile("p", tmp_path / "site" / f"libp{LIBRARY_SUFFIX}", "1.0")
    newer = PluginFile("p", tmp_path / "site" / f"libp{LIBRARY_SUFFIX}", "1.1")
    assert discover(root, extra=[wheel]).files["p"].path == root / f"p-v1.0{LIBRARY_SUFFIX}"
    assert discover(root, extra=[newer]).files["p"] == newer
    assert discover(root, {"p": "1.1"}, extra=[newer]).files["p"] == newer
    only = discover(tmp_path / "none", extra=[wheel], extra_problems={"q": "why"})
    assert (only.files["p"], only.problems) == (wheel, {"q": "why"})


@needs_maturin
def test_a_maturin_wheel_installed_in_a_venv_is_loaded_and_called_by_the_host(
    tmp_path: Path,
) -> None:
    project = create_project("wheel-demo", "rust", parent=tmp_path, wheel=True)
    run(["make", "-C", str(project), "wheel", f"MATURIN={MATURIN}"])
    [wheel] = (project / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"wheel_demo/libwheel_demo{LIBRARY_SUFFIX}" in names

    # A venv of its own that sees this host (through a .pth) but none of its wheels.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    site = Path(purelib.stdout.strip())
    host_site = sysconfig.get_paths()["purelib"]
    (site / "cliproxy_host_dev.pth").write_text(f"import site; site.addsitedir({host_site!r})\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)])  # fmt: skip

    script = Path(__file__).with_name("host_in_venv.py")
    done = run([str(python), str(script), "wheel-demo", str(tmp_path / "work")])
    results = orjson.loads(done.stdout.splitlines()[-1])
    library = site / "wheel_demo" / f"libwheel_demo{LIBRARY_SUFFIX}"
    assert results["wheel only"] == {
        "path": str(library),
        "version": "0.1.0",
        "identifier": "wheel-demo",
    }
    assert results["older file"]["path"] == str(library)
    assert results["newer file"]["path"].endswith(f"wheel-demo-v0.2.0{LIBRARY_SUFFIX}")
    assert results["same version"]["path"].endswith(f"wheel-demo-v0.1.0{LIBRARY_SUFFIX}")
    # The wheel is this venv's alone: the host outside it does not see it.
    assert "wheel-demo" not in {found.id for found in scan_wheels(LIBRARY_SUFFIX).files}


def install_dist(site: Path, name: str, version: str, entry: str, libraries: list[str]) -> None:
    """A distribution as an installer leaves it: a package and its .dist-info."""
    package = site / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the host must not import me')\n")
    for library in libraries:
        (package / library).write_bytes(b"")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[cliproxy_host.plugins]\n{entry}\n")


def test_entry_points_are_located_without_importing_and_explain_what_they_lack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    so = LIBRARY_SUFFIX
    install_dist(site, "empty_pkg", "1.0", "empty = empty_pkg", [])
    install_dist(site, "two_pkg", "2.0", "two = two_pkg", [f"liba{so}", f"libb{so}"])
    install_dist(
        site, "named_pkg", "dev", f"named = named_pkg:libb{so}", [f"liba{so}", f"libb{so}"]
    )
    install_dist(site, "bad_id_pkg", "1.0", "-bad = bad_id_pkg", [f"liba{so}"])
    monkeypatch.syspath_prepend(str(site))
    scan = scan_wheels(so)
    assert [(f.id, f.path, f.version) for f in scan.files] == [
        ("named", site / "named_pkg" / f"libb{so}", None)  # "dev" is no version
    ]
    assert "is no installed package" not in scan.problems["empty"]  # found, but empty
    assert f"no {so} libraries in {site / 'empty_pkg'}" in scan.problems["empty"]
    assert f"2 {so} libraries" in scan.problems["two"]
    assert "-bad" not in scan.problems
    assert "empty_pkg" not in sys.modules
