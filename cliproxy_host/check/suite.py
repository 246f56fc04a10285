"""The suite: which checks run in what order, on which backend, and the loop that runs them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from ..abi import HostHandler
from ..backends.native import NativePlugin
from ..backends.protocol import PluginBackend
from . import limits
from .checks.load import check_file_name, check_load
from .checks.methods import check_methods, check_unknown_method
from .checks.registration import check_executor_formats, check_reconfigure, check_registration
from .checks.streams import check_async_stream
from .checks.stress import check_concurrency, check_cycles, check_large_request
from .checks.summaries import (
    check_callback_scopes,
    check_host_calls,
    check_permissions,
    check_utf8_json,
)
from .report import CheckResult, Report
from .run import BackendFactory, Run


@dataclass(frozen=True)
class Check:
    """One entry of the suite."""

    key: str
    title: str  # the line shown when the whole check is skipped
    run: Callable[[Run], list[CheckResult]]
    needs: tuple[str, ...] = ()
    calls_plugin: bool = True


# In order. A check is skipped when a check it needs failed or was skipped, or when the
# plugin crashed or hung before it (then only the summaries of what was seen still run).
CHECKS: Final[tuple[Check, ...]] = (
    Check("file name", "file name", check_file_name, calls_plugin=False),
    Check("load", "loads", check_load),
    Check("registration", "registration", check_registration, ("load",)),
    Check("reconfigure", "reconfigure", check_reconfigure, ("registration",)),
    Check(
        "executor formats",
        "executor formats",
        check_executor_formats,
        ("registration",),
        calls_plugin=False,
    ),
    Check("methods", "capability methods", check_methods, ("registration",)),
    Check("unknown method", "unknown method", check_unknown_method, ("load",)),
    Check("concurrency", "concurrency", check_concurrency, ("unknown method",)),
    Check("large request", "1 MiB request", check_large_request, ("load",)),
    # After every check that may stream: it waits for all the run's streams to end.
    Check("async stream", "async stream", check_async_stream, ("registration",)),
    Check("cycles", "load/unload cycles", check_cycles, ("registration",)),
    Check("utf-8", "UTF-8 JSON", check_utf8_json, ("load",), calls_plugin=False),
    Check("host calls", "host callbacks", check_host_calls, ("load",), calls_plugin=False),
    Check(
        "callback scopes",
        "callback scopes",
        check_callback_scopes,
        ("load",),
        calls_plugin=False,
    ),
    Check("permissions", "permissions", check_permissions, ("load",), calls_plugin=False),
)


def backend_factory(isolated: bool) -> BackendFactory:
    """NativePlugin, or the worker-process backend with the suite's timeouts."""
    if not isolated:
        return NativePlugin
    # Imported on use: an in-process run never starts a worker.
    from ..backends.isolated.client import IsolatedPlugin  # noqa: PLC0415
    from ..backends.isolated.limits import IsolationLimits  # noqa: PLC0415

    # The backend's own timeouts (each call's, see Run.exchange) fire before the checker's,
    # so a worker that hangs is killed and reported rather than abandoned.
    config = IsolationLimits(start_timeout_s=limits.LOAD_TIMEOUT)

    def isolated_plugin(plugin_id: str, path: Path, handler: HostHandler) -> PluginBackend:
        return IsolatedPlugin(plugin_id, path, handler, config)

    return isolated_plugin


def program_factory(command: Sequence[str]) -> tuple[Path, BackendFactory]:
    """A plugin program run from `command` (in this directory): its file, its backend."""
    from ..backends.isolated.limits import IsolationLimits  # noqa: PLC0415
    from ..backends.program.client import ProgramCommand, ProgramPlugin  # noqa: PLC0415

    program = ProgramCommand(tuple(command), Path.cwd())
    config = IsolationLimits(start_timeout_s=limits.LOAD_TIMEOUT)

    def program_plugin(plugin_id: str, path: Path, handler: HostHandler) -> PluginBackend:
        return ProgramPlugin(plugin_id, program, handler, config)

    return program.program_file(), program_plugin


def run_checks(
    path: Path | None = None,
    *,
    command: Sequence[str] | None = None,
    isolated: bool = False,
    cycles: int | None = None,
    progress: Callable[[CheckResult], None] | None = None,
) -> Report:
    """Run every check against the plugin file at `path`; `progress` is handed each result
    as soon as its check is done (the report holds them all at the end). With `command`
    instead of `path`, the plugin is a program (docs/PROTOCOL.md), run as the host runs it."""
    started = time.monotonic()
    if command is not None:
        path, factory = program_factory(command)
        isolated = True  # a process of its own
    elif path is not None:
        factory = backend_factory(isolated)
    else:
        raise ValueError("run_checks needs a plugin file or a command")
    if cycles is None:
        cycles = limits.ISOLATED_CYCLES if isolated else limits.CYCLES
    run = Run(path, factory, isolated, cycles)
    run.program = command is not None
    results: list[CheckResult] = []
    blocked: dict[str, str] = {}
    try:
        for check in CHECKS:
            reason = next((blocked[k] for k in check.needs if k in blocked), None)
            if reason is None and check.calls_plugin and run.stuck:
                reason = run.stuck
            if reason is not None:
                skipped = CheckResult(check.title, "skip", f"skipped: {reason}")
                results.append(skipped)
                if progress is not None:
                    progress(skipped)
                blocked[check.key] = reason
                continue
            check_started = time.monotonic()
            produced = _timed(check.run(run), check_started)
            results.extend(produced)
            if progress is not None:
                for result in produced:
                    progress(result)
            failed = next((r for r in produced if r.status == "fail"), None)
            if failed is not None:
                blocked[check.key] = f"{failed.name} failed"
            elif all(r.status == "skip" for r in produced):
                blocked[check.key] = f"{check.title} was skipped"
    finally:
        run.finish()
    return Report(path, isolated, tuple(results), time.monotonic() - started)


def _timed(results: list[CheckResult], started: float) -> list[CheckResult]:
    """A single result gets the check's time, unless it measured its own."""
    if len(results) == 1 and not results[0].seconds:
        return [replace(results[0], seconds=time.monotonic() - started)]
    return results
