"""Checks that judge what the run saw rather than calling the plugin: responses, host calls."""

from __future__ import annotations

from ...callbacks.permissions import GO_CALLBACKS, needed_permissions
from .. import limits
from ..report import CheckResult
from ..run import Run


def check_utf8_json(run: Run) -> list[CheckResult]:
    """Every response the plugin sent during the run was UTF-8 JSON."""
    log = run.responses
    if log.bad:
        return [
            CheckResult(
                "UTF-8 JSON",
                "fail",
                f"{log.bad} of {log.count} responses: " + "; ".join(log.examples),
                "encode responses as UTF-8 JSON; send bytes as base64 strings",
            )
        ]
    if not log.count:
        return [CheckResult("UTF-8 JSON", "skip", "the plugin sent no response to check")]
    return [CheckResult("UTF-8 JSON", "pass", f"all {log.count} responses were UTF-8 JSON")]


def check_host_calls(run: Run) -> list[CheckResult]:
    """Every host call the plugin made was one the real host would accept."""
    name = "host callbacks"
    host = run.host
    if not host.calls:
        return [CheckResult(name, "skip", "the plugin made no host calls during the run")]
    made = ", ".join(f"{m} x{n}" for m, n in sorted(host.calls.items()))
    fix = (
        'send JSON objects: host.log {"level": "info", "message": "..."}, host.http.do '
        '{"method", "url", "headers": {"Name": ["value"]}, "body": "<base64>"}'
    )
    if host.errors:
        return [CheckResult(name, "fail", "; ".join(host.errors[: limits.MAX_LISTED]), fix)]
    if host.warnings:
        return [CheckResult(name, "warn", "; ".join(host.warnings[: limits.MAX_LISTED]), fix)]
    return [
        CheckResult(name, "pass", f"{made}, all well-formed (answered locally, no network traffic)")
    ]


def check_callback_scopes(run: Run) -> list[CheckResult]:
    """host.log and host.http.* calls made within a scoped call echo its host_callback_id."""
    name = "callback scopes"
    host = run.host
    if not host.scoped_calls:
        return [CheckResult(name, "skip", "no host.log or host.http.* call was made within a call")]
    if host.scope_warnings:
        return [
            CheckResult(
                name,
                "warn",
                "; ".join(host.scope_warnings[: limits.MAX_LISTED])
                + " (the host falls back to a fresh scope)",
                'copy the request\'s "host_callback_id" into the host.log and host.http.* '
                "requests made for it: the log line then names the request, and its HTTP "
                "streams close with it",
            )
        ]
    return [
        CheckResult(
            name,
            "pass",
            f"{host.scoped_calls} host calls made within scoped calls, each with its "
            "host_callback_id",
        )
    ]


def check_permissions(run: Run) -> list[CheckResult]:
    """The host callbacks the plugin used, as the `permissions` entry it needs."""
    name = "permissions"
    used = set(run.host.calls)
    if not used:
        return [CheckResult(name, "skip", "the plugin made no host calls during the run")]
    needed = needed_permissions(used)
    entry = "; ".join(f"{key}: [{', '.join(values)}]" for key, values in needed.items())
    key = f"plugins.configs.{run.plugin_id}.permissions"
    if used <= GO_CALLBACKS:
        reason = f"needs {entry} (allowed by default; under strict, grant them in {key})"
        return [CheckResult(name, "pass", reason)]
    return [
        CheckResult(
            name,
            "warn",
            f"needs {entry}: this host denies its own callbacks until granted",
            f"grant them in {key} (callbacks, and the topics or plugin IDs it uses)",
        )
    ]
