"""Build the C (CMake) and Rust (cargo) example plugins and install them under plugins/<os>/<arch>/.

Usage: python examples/build.py [--plugins-dir plugins] [--build-dir build]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.discovery import platform_tag

EXAMPLES = Path(__file__).resolve().parent
C_PLUGINS = ("simple-c", "http-c")
# crate (and plugin ID) -> the library file cargo writes
RUST_PLUGINS = {"simple-rust": "simple_rust"}


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build_c(build_dir: Path) -> dict[str, Path]:
    """Configure and build examples/c with CMake; answer plugin ID -> built library."""
    out = build_dir / "c"
    _run(["cmake", "-S", str(EXAMPLES / "c"), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"])
    _run(["cmake", "--build", str(out), "--parallel"])
    return {pid: out / f"{pid}{LIBRARY_SUFFIX}" for pid in C_PLUGINS}


def build_rust(build_dir: Path) -> dict[str, Path]:
    """Build examples/rust with cargo, offline; answer plugin ID -> built library."""
    target = build_dir / "rust"
    manifest = EXAMPLES / "rust" / "Cargo.toml"
    _run(
        [
            "cargo",
            "build",
            "--release",
            "--offline",
            "--manifest-path",
            str(manifest),
            "--target-dir",
            str(target),
        ]
    )
    prefix = "" if sys.platform == "win32" else "lib"
    return {
        pid: target / "release" / f"{prefix}{lib}{LIBRARY_SUFFIX}"
        for pid, lib in RUST_PLUGINS.items()
    }


def install(built: dict[str, Path], plugins_dir: Path) -> dict[str, Path]:
    """Copy built libraries to plugins_dir/<os>/<arch>/<id><ext>, as the host discovers them."""
    os_name, arch = platform_tag()
    dest_dir = plugins_dir / os_name / arch
    dest_dir.mkdir(parents=True, exist_ok=True)
    installed = {}
    for pid, src in built.items():
        dest = dest_dir / f"{pid}{LIBRARY_SUFFIX}"
        # Copy to a temporary name and rename, so a running host never maps a half-written file.
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
        installed[pid] = dest
    return installed


def build_all(plugins_dir: Path, build_dir: Path) -> dict[str, Path]:
    return install({**build_c(build_dir), **build_rust(build_dir)}, plugins_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins-dir", type=Path, default=Path("plugins"))
    parser.add_argument("--build-dir", type=Path, default=Path("build"))
    args = parser.parse_args()
    for pid, path in build_all(args.plugins_dir, args.build_dir).items():
        print(f"installed {pid}: {path}")


if __name__ == "__main__":
    main()
