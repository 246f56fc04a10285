"""Where plugin files are on disk, which ID and version each names, and which one is taken."""

from __future__ import annotations

import os
import platform
import re
import stat
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cmp_to_key
from pathlib import Path
from typing import Final

from .binfmt import unreadable

# The Go host's rules (ABI.md section 5); plugins built for it must be found the same way.
ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"  # a whole ID; anchor it for search
_ID_RE: Final = re.compile(ID_PATTERN)
_VERSION_RE: Final = re.compile(r"[0-9][0-9A-Za-z.+-]*")
_VERSION_MARK: Final = "-v"

_GO_OS: Final = {"linux": "linux", "darwin": "darwin", "win32": "windows", "cygwin": "windows"}
_GO_ARCH: Final = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "x64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8l": "arm64",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "x86": "386",
}
# A 32-bit Python on a 64-bit OS can only load 32-bit libraries.
_ARCH_32BIT: Final = {"amd64": "386", "arm64": "arm"}

# x86-64 microarchitecture levels by the /proc/cpuinfo flags each adds to the one below.
# An entry that is a tuple is satisfied by any one of its spellings.
_AMD64_LEVELS: Final[tuple[tuple[str, tuple[str | tuple[str, ...], ...]], ...]] = (
    ("v2", ("cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3")),
    (
        "v3",
        ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", ("abm", "lzcnt"), "movbe", "xsave"),
    ),
    ("v4", ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")),
)


def is_valid_id(plugin_id: str) -> bool:
    """Whether a string is a valid plugin ID."""
    return _ID_RE.fullmatch(plugin_id) is not None


def is_valid_version(version: str) -> bool:
    """Whether a string is a valid plugin version (starts with a digit)."""
    return _VERSION_RE.fullmatch(version) is not None


def normalize_pin(version: str) -> str:
    """A pinned version as files name it: `v1.2.0` and `V1.2.0` pin `1.2.0`."""
    return version[1:] if version.startswith(("v", "V")) else version


def platform_tag() -> tuple[str, str]:
    """Go's names for this process's OS and architecture, e.g. ("linux", "amd64")."""
    os_name = _GO_OS.get(sys.platform)
    if os_name is None:
        os_name = "freebsd" if sys.platform.startswith("freebsd") else sys.platform
    machine = platform.machine().lower()
    arch = _GO_ARCH.get(machine)
    if arch is None:
        arch = "arm" if machine.startswith("arm") else machine
    if struct.calcsize("P") == 4:
        arch = _ARCH_32BIT.get(arch, arch)
    return os_name, arch


def library_suffix(os_name: str) -> str:
    """The extension of a dynamic library on an OS given by its Go name."""
    return {"windows": ".dll", "darwin": ".dylib"}.get(os_name, ".so")


def _read_proc_cpuinfo() -> str:
    if not sys.platform.startswith("linux"):
        return ""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu_flags(cpuinfo: str) -> set[str]:
    # Only flags every CPU reports count: a library must run on whichever core it lands.
    common: set[str] | None = None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags = set(value.split())
            common = flags if common is None else common & flags
    return common or set()


def cpu_variants(arch: str, *, read_cpuinfo: Callable[[], str] | None = None) -> list[str]:
    """The CPU variants this machine runs, best first: ["v3", "v2"] on an AVX2 x86-64.

    Only amd64 has variants (the x86-64 microarchitecture levels), read from the
    /proc/cpuinfo flags on Linux; `read_cpuinfo` replaces reading that file.
    """
    if arch != "amd64":
        return []
    flags = _cpu_flags((read_cpuinfo or _read_proc_cpuinfo)())
    supported: list[str] = []
    for level, required in _AMD64_LEVELS:
        for flag in required:
            spellings = (flag,) if isinstance(flag, str) else flag
            if flags.isdisjoint(spellings):
                return supported[::-1]
        supported.append(level)
    return supported[::-1]


def search_dirs(root: Path, os_name: str, arch: str, variants: Iterable[str]) -> list[Path]:
    """The directories searched for plugins, in search order (ABI.md section 5)."""
    os_dir = root / os_name
    return [*(os_dir / f"{arch}-{variant}" for variant in variants), os_dir / arch, root]


def parse_name(filename: str, suffix: str) -> tuple[str, str | None] | None:
    """(ID, version or None) named by a plugin file, or None for a file that is no plugin."""
    if len(filename) <= len(suffix) or not filename.lower().endswith(suffix.lower()):
        return None
    stem = filename[: -len(suffix)]
    plugin_id, mark, version = stem.rpartition(_VERSION_MARK)
    if mark and is_valid_id(plugin_id) and is_valid_version(version):
        return plugin_id, version
    return (stem, None) if is_valid_id(stem) else None


def _numeric_segments(version: str) -> list[int] | None:
    segments = version.split(".")
    if all(segment.isascii() and segment.isdigit() for segment in segments):
        return [int(segment) for segment in segments]
    return None


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version a is lower than, equal to or higher than b.

    Dot-separated numbers compare numerically, missing ones counting as 0 (1.2 == 1.2.0);
    if either version has a part that is not a number the two compare as plain strings.
    """
    left, right = _numeric_segments(a), _numeric_segments(b)
    if left is None or right is None:
        return (a > b) - (a < b)
    width = max(len(left), len(right))
    left += [0] * (width - len(left))
    right += [0] * (width - len(right))
    return (left > right) - (left < right)


@dataclass(frozen=True)
class PluginFile:
    """One plugin library on disk."""

    id: str
    path: Path
    version: str | None


@dataclass(frozen=True)
class Discovery:
    """What a scan of the plugins directory found.

    `files` holds the file taken for each plugin ID; `candidates` every file seen for an
    ID, in search order; `problems` why an ID that has files has none taken (or
    only files that cannot be looked at, such as a symlink loop); `errors`
    directories that exist but could not be listed.
    """

    files: dict[str, PluginFile] = field(default_factory=dict)
    candidates: dict[str, tuple[PluginFile, ...]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    errors: tuple[str, ...] = ()


def _list_dir(directory: Path, suffix: str) -> tuple[list[PluginFile], dict[str, str]]:
    """The plugin files of one directory, and (by ID) those that cannot even be looked at."""
    found: list[PluginFile] = []
    broken: dict[str, str] = {}
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            parsed = parse_name(entry.name, suffix)
            if parsed is None:
                continue
            try:
                # Follows symlinks: a link to a regular file counts, a link to a directory not.
                if not entry.is_file():
                    continue
            except OSError as exc:  # a symlink loop, a file we may not look at
                broken.setdefault(parsed[0], unreadable(directory / entry.name, exc))
                continue
            found.append(PluginFile(parsed[0], directory / entry.name, parsed[1]))
    return found, broken


def _better(candidate: PluginFile, best: PluginFile) -> bool:
    if candidate.version is None:
        return False
    return best.version is None or compare_versions(candidate.version, best.version) > 0


def _select(files: tuple[PluginFile, ...], pin: str | None) -> PluginFile | str:
    """The file taken among one ID's candidates, or why none is."""
    if pin is not None:
        for candidate in files:
            if candidate.version == pin:
                return candidate
        versions: list[str] = []
        for candidate in files:
            if candidate.version is not None and candidate.version not in versions:
                versions.append(candidate.version)
        versions.sort(key=cmp_to_key(compare_versions))
        if any(candidate.version is None for candidate in files):
            versions.append("unversioned")
        return f"pinned version {pin} not found; available: {', '.join(versions) or 'none'}"
    best = files[0]
    for candidate in files[1:]:
        if _better(candidate, best):
            best = candidate
    return best


def plugins_dir_problem(root: Path) -> str | None:
    """Why `root` cannot serve as the plugins directory (missing, not a directory,
    unreadable), or None when it can."""
    fix = "set plugins.dir to the directory that holds the plugin files"
    try:
        mode = os.stat(root).st_mode
    except FileNotFoundError:
        return f"plugins dir {root} does not exist: create it, or {fix}"
    except OSError as exc:  # a symlink loop, a file on the way, a permission denied
        return f"plugins dir {root} cannot be used ({exc.strerror or exc}): {fix}"
    if not stat.S_ISDIR(mode):
        return f"plugins dir {root} is not a directory: {fix}"
    return None


def discover(
    root: Path,
    pins: Mapping[str, str] | None = None,
    *,
    os_name: str | None = None,
    arch: str | None = None,
    variants: Iterable[str] | None = None,
    suffix: str | None = None,
    extra: Iterable[PluginFile] = (),
    extra_problems: Mapping[str, str] | None = None,
) -> Discovery:
    """Scan the plugins directory `root` and pick one file per plugin ID.

    A versioned file beats an unversioned one and a higher version a lower one; between
    equals the first in search order wins. `pins` maps plugin IDs to the only version
    that may be taken for them. The platform defaults to this process's. `extra` are
    files found elsewhere (installed wheels), searched after the plugins dir, and
    `extra_problems` why an ID found there has no file.
    """
    here = platform_tag()
    os_name = os_name or here[0]
    arch = arch or here[1]
    if variants is None:
        # The CPU can only be asked about when the files are for this machine.
        variants = cpu_variants(arch) if (os_name, arch) == here else []
    suffix = suffix or library_suffix(os_name)
    seen: dict[str, list[PluginFile]] = {}
    errors: list[str] = []
    broken: dict[str, str] = {}
    for directory in search_dirs(root, os_name, arch, variants):
        try:
            listed, unlistable = _list_dir(directory, suffix)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            errors.append(f"cannot list plugin directory {directory}: {exc.strerror or exc}")
            continue
        for plugin_file in listed:
            seen.setdefault(plugin_file.id, []).append(plugin_file)
        for plugin_id, reason in unlistable.items():
            broken.setdefault(plugin_id, reason)
    for plugin_file in extra:
        seen.setdefault(plugin_file.id, []).append(plugin_file)
    for plugin_id, reason in (extra_problems or {}).items():
        broken.setdefault(plugin_id, reason)

    normalized_pins = {key: normalize_pin(value) for key, value in (pins or {}).items()}
    result = Discovery(errors=tuple(errors))
    for plugin_id in sorted(seen):
        candidates = tuple(seen[plugin_id])
        result.candidates[plugin_id] = candidates
        chosen = _select(candidates, normalized_pins.get(plugin_id) or None)
        if isinstance(chosen, PluginFile):
            result.files[plugin_id] = chosen
        else:
            result.problems[plugin_id] = chosen
    # An ID whose only files cannot be looked at says why, instead of vanishing.
    for plugin_id, reason in broken.items():
        if plugin_id not in seen:
            result.problems[plugin_id] = reason
    return result
