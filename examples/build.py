"""Build the C (CMake) and Rust (cargo) example plugins and install them under plugins/<os>/<arch>/.

Usage: python examples/build.py [--plugins-dir plugins] [--build-dir build] [-v]

One line per plugin built (name, language, result, seconds); the build tools' own output
only when a build fails, or with -v.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.discovery import platform_tag

EXAMPLES = Path(__file__).resolve().parent
C_PLUGINS = ("simple-c", "http-c", "echo-c")
# crate (and plugin ID) -> the library file cargo writes
RUST_PLUGINS = {"simple-rust": "simple_rust"}


class BuildFailed(Exception):
    """A build tool exited non-zero; the message holds its command and its output."""


def _run(cmd: list[str], *, verbose: bool = False) -> None:
    """Run one build step; its output is shown live with verbose, else only if it fails."""
    if verbose:
        print("+", " ".join(cmd), flush=True)
    done = subprocess.run(
        cmd,
        check=False,
        stdout=None if verbose else subprocess.PIPE,
        stderr=None if verbose else subprocess.STDOUT,
        text=True,
    )
    if done.returncode != 0:
        output = done.stdout or ""  # None with verbose: it was shown as it came
        raise BuildFailed(f"{' '.join(cmd)} exited {done.returncode}\n{output}".rstrip())


def build_c(build_dir: Path, *, verbose: bool = False) -> dict[str, Path]:
    """Configure and build examples/c with CMake; answer plugin ID -> built library."""
    out = build_dir / "c"
    _run(
        ["cmake", "-S", str(EXAMPLES / "c"), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"],
        verbose=verbose,
    )
    _run(["cmake", "--build", str(out), "--parallel"], verbose=verbose)
    return {pid: out / f"{pid}{LIBRARY_SUFFIX}" for pid in C_PLUGINS}


def build_rust(build_dir: Path, *, verbose: bool = False) -> dict[str, Path]:
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
        ],
        verbose=verbose,
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


Builder = Callable[..., dict[str, Path]]
# language -> how its examples are built and their IDs, in the order `make examples` builds them
BUILDERS: dict[str, tuple[Builder, tuple[str, ...]]] = {
    "C": (build_c, C_PLUGINS),
    "Rust": (build_rust, tuple(RUST_PLUGINS)),
}


def build_language(
    language: str, build_dir: Path, *, verbose: bool = False, out: Callable[[str], None] = print
) -> dict[str, Path]:
    """Build one language's examples, printing one line per plugin: name, language,
    result, seconds (a failure also prints the tool's output and raises BuildFailed)."""
    builder, plugin_ids = BUILDERS[language]
    started = time.monotonic()
    try:
        built: dict[str, Path] = builder(build_dir, verbose=verbose)
    except BuildFailed as exc:
        seconds = time.monotonic() - started
        for pid in plugin_ids:
            out(f"{pid:<14} {language:<5} FAILED  {seconds:5.1f} s")
        out(str(exc))
        raise
    seconds = time.monotonic() - started
    for pid, path in built.items():
        # One tool run builds every plugin of a language: each line shows that run's time.
        result = "ok" if path.is_file() else f"missing {path}"
        out(f"{pid:<14} {language:<5} {result:<7} {seconds:5.1f} s")
    return built


def build_all(plugins_dir: Path, build_dir: Path, *, verbose: bool = False) -> dict[str, Path]:
    built: dict[str, Path] = {}
    for language in BUILDERS:
        built.update(build_language(language, build_dir, verbose=verbose))
    return install(built, plugins_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins-dir", type=Path, default=Path("plugins"))
    parser.add_argument("--build-dir", type=Path, default=Path("build"))
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show cmake's and cargo's own output"
    )
    args = parser.parse_args()
    try:
        installed = build_all(args.plugins_dir, args.build_dir, verbose=args.verbose)
    except BuildFailed:
        sys.exit(1)
    os_name, arch = platform_tag()
    print(f"installed {len(installed)} plugins into {args.plugins_dir / os_name / arch}")


if __name__ == "__main__":
    main()
