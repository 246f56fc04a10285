"""Checks that the file is named and loads as the host needs: file name, the five load steps."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Final

from ...abi import ABI_VERSION, LIBRARY_SUFFIX
from ...backends.native import INIT_SYMBOL
from ...discovery import parse_name
from ...errors import (
    AbiVersionMismatch,
    PluginCrashed,
    PluginError,
    PluginInitFailed,
    PluginLoadError,
    PluginTimeout,
)
from .. import limits
from ..report import CheckResult
from ..run import Hung, Run

LOAD_STEPS: Final = ("loads", "exports init", "init returns 0", "ABI version", "function table")
_LOAD_FIXES: Final = (
    "build a shared library for this OS and architecture, and install the libraries it "
    "links against",
    f"export `int {INIT_SYMBOL}(const cliproxy_host_api*, cliproxy_plugin_api*)` with C "
    'linkage: CLIPROXY_EXPORT in C, #[no_mangle] pub extern "C" in Rust',
    f"return 0 from {INIT_SYMBOL} once the plugin is ready; a plugin that cannot start "
    "should say why through host.log first",
    f"set plugin->abi_version = CLIPROXY_ABI_VERSION ({ABI_VERSION}) and build against "
    "include/cliproxy_plugin.h",
    f"set plugin->call and plugin->free_buffer in {INIT_SYMBOL} (only shutdown may stay NULL)",
)


def check_file_name(run: Run) -> list[CheckResult]:
    """Whether the host would discover the file, and under which plugin ID."""
    name = run.path.name
    if run.program:
        return [
            CheckResult(
                "file name",
                "pass",
                f"a plugin program ({name}): the host runs it from plugins.configs.<id>.command",
            )
        ]
    if not name.endswith(LIBRARY_SUFFIX):
        return [
            CheckResult(
                "file name",
                "warn",
                f"the host only discovers *{LIBRARY_SUFFIX} files on this platform",
                f"install it as plugins/<os>/<arch>/{run.plugin_id}{LIBRARY_SUFFIX}",
            )
        ]
    parsed = parse_name(name, LIBRARY_SUFFIX)
    if parsed is None:
        return [
            CheckResult(
                "file name",
                "warn",
                f"{name!r} is not a valid plugin ID, so the host ignores the file",
                "rename it to match [A-Za-z0-9][A-Za-z0-9._-]{0,127}" + LIBRARY_SUFFIX,
            )
        ]
    plugin_id, version = parsed
    shown = f"plugin ID {plugin_id}" + (f", version {version}" if version else "")
    return [CheckResult("file name", "pass", f"the host would load it as {shown}")]


def _load_step(exc: PluginError) -> int:
    """Which load step a load error belongs to. NativePlugin and the isolated backend raise
    the same classes; the message tells apart the steps that share one."""
    if isinstance(exc, AbiVersionMismatch):
        return 3
    if isinstance(exc, PluginInitFailed):
        return 4 if "NULL" in exc.message else 2
    if isinstance(exc, PluginTimeout):
        return 2
    # Only the family's own class: its subclasses are the steps above, or registration's.
    if type(exc) is PluginLoadError and "does not export" in exc.message:
        return 1
    return 0


def check_load(run: Run) -> list[CheckResult]:
    """Open the backend that the later checks call; one result per load step."""
    started = time.monotonic()
    where = "a worker process" if run.isolated else "this process"
    if run.program:
        where = "a process of its own, and said rpc.hello"
    passes = (
        f"{run.path.name} loads in {where}",
        f"{INIT_SYMBOL} is exported",
        f"{INIT_SYMBOL} returned 0",
        f"the plugin speaks ABI version {ABI_VERSION}",
        "call and free_buffer are set",
    )

    def outcome(step: int, reason: str = "", fix: str = "") -> list[CheckResult]:
        """Steps before `step` passed, `step` failed, the rest were not reached."""
        results = [CheckResult(LOAD_STEPS[i], "pass", passes[i]) for i in range(step)]
        if step < len(LOAD_STEPS):
            fix = fix or _LOAD_FIXES[step]
            results.append(CheckResult(LOAD_STEPS[step], "fail", reason, fix))
            results.extend(
                CheckResult(name, "skip", f"skipped: {LOAD_STEPS[step]} failed")
                for name in LOAD_STEPS[step + 1 :]
            )
        last = min(step, len(LOAD_STEPS) - 1)
        results[last] = replace(results[last], seconds=time.monotonic() - started)
        return results

    if not run.program and not run.path.is_file():
        missing = "does not exist" if not run.path.exists() else "is not a regular file"
        return outcome(0, f"{run.path} {missing}", "check the path; build the plugin first")
    try:
        run.backend = run.open()
    except Hung:
        return outcome(
            2, run.hung(f"{INIT_SYMBOL} did not return within {limits.LOAD_TIMEOUT:g} s")
        )
    except PluginCrashed as exc:
        return outcome(0, f"the worker crashed loading or initialising it: {exc.message}")
    except PluginError as exc:
        return outcome(_load_step(exc), exc.message)
    except Exception as exc:  # a backend that fails some other way is still a failed load
        return outcome(0, f"{type(exc).__name__}: {exc}")
    return outcome(len(LOAD_STEPS))
