"""Checks of the capability methods: each declared one answers a minimal request, and an
unknown method answers unknown_method."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from ...abi import CAPABILITY_METHODS
from ...envelope import b64decode, ci_get
from ...errors import DECLINE_CODES
from ..report import CheckResult
from ..run import Answer, Run
from ..samples import BYTE_FIELDS, TRANSFORMS, UNKNOWN_METHOD

# The answer shape the host reads, named in the fix when a result does not have it.
_EXPECTED: Final[dict[str, str]] = {
    "executor.execute": '{"Payload": "<base64>", "Headers": {"Name": ["value"]}}',
    "executor.execute_stream": '{"headers": {...}, "chunks": [{"Payload": "<base64>"}]}, or '
    "no chunks and host.stream.emit/close",
    "management.register": '{"Routes": [{"Method", "Path", "Menu", "Description"}], '
    '"Resources": [{"Path", "Menu", "Description"}]}',
    "management.handle": '{"StatusCode": 200, "Headers": {...}, "Body": "<base64>"}',
    **dict.fromkeys(TRANSFORMS, '{"Body": "<base64>"}'),
}


def check_methods(run: Run) -> list[CheckResult]:
    """Every method of every declared capability, with a minimal valid request."""
    assert run.registration is not None
    results = []
    for flag, methods in CAPABILITY_METHODS.items():
        if flag not in run.registration.flags:
            continue
        for method in methods:
            if run.stuck:
                results.append(CheckResult(f"method {method}", "skip", f"skipped: {run.stuck}"))
                continue
            started = time.monotonic()
            answer = run.call(method, run.request_for(method))
            run.answers[method] = answer
            results.append(_judge_method(flag, method, answer, time.monotonic() - started))
    return results


def check_unknown_method(run: Run) -> list[CheckResult]:
    """A method no plugin implements must be declined with unknown_method."""
    name = "unknown method"
    answer = run.call(UNKNOWN_METHOD, b"{}")
    run.answers.setdefault(UNKNOWN_METHOD, answer)
    # A plugin's own code from its envelope, not a class of the host's error tree.
    if answer.kind == "error" and answer.code == "unknown_method":
        return [CheckResult(name, "pass", f"{UNKNOWN_METHOD} answers unknown_method")]
    fix = (
        'answer {"ok": false, "error": {"code": "unknown_method", ...}} to every method '
        "you do not implement"
    )
    if answer.kind == "error":
        reason = f"{UNKNOWN_METHOD} answers {answer.code}, not unknown_method"
        return [CheckResult(name, "warn", reason, fix)]
    if answer.kind == "ok":
        reason = f"{UNKNOWN_METHOD} answers ok to a method it cannot know"
        return [CheckResult(name, "fail", reason, fix)]
    return [CheckResult(name, "fail", f"{UNKNOWN_METHOD} {answer.describe()}", fix)]


def _judge_method(flag: str, method: str, answer: Answer, seconds: float) -> CheckResult:
    name = f"method {method}"
    if answer.kind == "ok":
        problems = _result_problems(method, answer.result)
        if problems:
            expected = _EXPECTED.get(method, "a JSON object; byte fields as base64 strings")
            return CheckResult(name, "warn", "; ".join(problems), f"answer {expected}", seconds)
        shown = ""
        if method.endswith(".identifier"):
            shown = f" (identifier {ci_get(answer.result, 'identifier')!r})"
        return CheckResult(name, "pass", f"answers ok{shown}", seconds=seconds)
    if answer.kind == "error":
        if answer.code in DECLINE_CODES:
            return CheckResult(
                name,
                "warn",
                f"declares {flag} but {method} answers {answer.code}: {answer.message}",
                f"implement {method}, or stop declaring {flag}",
                seconds,
            )
        return CheckResult(
            name,
            "warn",
            f"answers error {answer.code} to a minimal valid request: {answer.message}",
            "a minimal request should succeed; if it cannot without settings, the message "
            "should say which to set",
            seconds,
        )
    return CheckResult(name, "fail", answer.describe(), answer.fix, seconds)


def _result_problems(method: str, result: Any) -> list[str]:
    """Where a result lacks the shape the host reads for `method`."""
    if not isinstance(result, dict):
        return [f"the result is {type(result).__name__}, not a JSON object"]
    problems = [
        f"{key} is not a base64 string"
        for key in BYTE_FIELDS
        if ci_get(result, key) is not None and not _is_base64(ci_get(result, key))
    ]
    if method.endswith(".identifier"):
        ident = ci_get(result, "identifier")
        if not isinstance(ident, str) or not ident:
            problems.append("identifier is missing or empty")
    elif method == "executor.execute" and ci_get(result, "Payload") is None:
        problems.append("Payload is missing")
    elif method == "executor.execute_stream":
        chunks = ci_get(result, "chunks")
        if chunks is None:
            pass  # streamed asynchronously: the async stream check judges the emits
        elif not isinstance(chunks, list) or not all(isinstance(c, dict) for c in chunks):
            problems.append("chunks is not a list of objects")
        elif not all(_is_base64(ci_get(c, "Payload")) for c in chunks):
            problems.append("a chunk's Payload is not a base64 string")
    elif method == "management.register":
        problems.extend(_route_problems(result))
    elif method == "management.handle":
        status = ci_get(result, "StatusCode")
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            problems.append(f"StatusCode {status!r} is not an HTTP status")
    return problems


def _route_problems(result: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, needs_method in (("Routes", True), ("Resources", False)):
        entries = ci_get(result, key)
        if entries is None:
            continue
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            problems.append(f"{key} is not a list of objects")
            continue
        for entry in entries:
            path = ci_get(entry, "Path")
            if not isinstance(path, str) or not path.startswith("/"):
                problems.append(f"{key}: Path {path!r} does not start with /")
            elif any(bad in path for bad in (":", "*", "{", "..")):
                problems.append(f"{key}: Path {path!r} has :, *, {{ or .. (rejected)")
            if needs_method and not isinstance(ci_get(entry, "Method"), str):
                problems.append(f"{key}: a route has no Method")
    return problems


def _is_base64(value: Any) -> bool:
    """A byte field as the host decodes it: absent, empty or a base64 string."""
    try:
        b64decode(value, "field")
    except ValueError:
        return False
    return True
