"""Plugins shipped as Python wheels: the `cliproxy_host.plugins` entry-point group.

A wheel (built by maturin from a Rust cdylib, say) declares
`[project.entry-points."cliproxy_host.plugins"] <plugin ID> = "<package>"`; the package
holds the library. The host takes it like a file under the plugins dir: the entry
point's name is the plugin ID (the same ID rules), the distribution's version its
version, and it competes with files of the same ID by the same rules, after them in
search order. The package is located, never imported: no wheel code runs in the host.
The host's watcher looks at site_dirs(), so that a wheel installed or removed while it
runs is taken at once.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Final

from .discovery import PluginFile, is_valid_id, is_valid_version

GROUP: Final = "cliproxy_host.plugins"


@dataclass(frozen=True)
class WheelScan:
    """The plugins the installed wheels bring, and why an entry point brings none."""

    files: tuple[PluginFile, ...] = ()
    problems: dict[str, str] = field(default_factory=dict)


def _package_dirs(module: str) -> list[Path]:
    """The directories of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def _library(entry: EntryPoint, suffix: str) -> Path | str:
    """The library an entry point's package holds, or why there is not exactly one."""
    dirs = _package_dirs(entry.module)
    where = f"entry point {entry.name} = {entry.value!r} ({GROUP})"
    if not dirs:
        return f"{where}: {entry.module} is no installed package; reinstall the plugin's wheel"
    found = sorted(
        path for directory in dirs for path in directory.iterdir() if path.name.endswith(suffix)
    )
    if entry.attr:  # `package:file name` names the library when the package holds several
        found = [path for path in found if path.name == entry.attr]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        return (
            f"{where}: {what} {suffix} libraries in {dirs[0]}; a plugin wheel holds exactly "
            f"one for this platform (or name it: `{entry.module}:<file name>`)"
        )
    return found[0]


def site_dirs() -> list[Path]:
    """Where distributions are found: the entries of sys.path, as they are now (the
    watcher keeps those that are directories)."""
    return [Path(p or ".") for p in sys.path]


def scan_wheels(suffix: str) -> WheelScan:
    """Every plugin the installed distributions declare in the `cliproxy_host.plugins` group."""
    # Directory listings are cached by modification time, which a quick install can leave
    # as it was: a wheel installed a moment ago must be seen.
    importlib.invalidate_caches()
    files: list[PluginFile] = []
    problems: dict[str, str] = {}
    for entry in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        if not is_valid_id(entry.name):
            continue  # as a file whose name is no plugin ID: not a plugin
        library = _library(entry, suffix)
        if isinstance(library, str):
            problems.setdefault(entry.name, library)
            continue
        version = entry.dist.version if entry.dist is not None else None
        files.append(
            PluginFile(entry.name, library, version if is_valid_version(version or "") else None)
        )
    return WheelScan(tuple(files), problems)
