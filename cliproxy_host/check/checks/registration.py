"""Checks of the lifecycle calls: plugin.register with the base config, plugin.reconfigure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from ...abi import CAPABILITY_METHODS, QUALIFIER_FLAGS, Method
from ...envelope import ci_get
from ...errors import PluginLoadError
from ...host.facade import lifecycle_request
from ...host.registry import Registration, parse_registration
from .. import limits
from ..report import CheckResult
from ..run import Run
from ..samples import BASE_CONFIG, config_yaml, sample_value

REGISTRATION_FIX: Final = (
    'answer {"schema_version": 1, "metadata": {"Name", "Version", "Author", '
    '"GitHubRepository", "ConfigFields": [...]}, "capabilities": {"<flag>": true}}'
)


def check_registration(run: Run) -> list[CheckResult]:
    """plugin.register answers a registration the host accepts; keeps it for later checks."""
    answer = run.call(
        Method.REGISTER, lifecycle_request(config_yaml(BASE_CONFIG)), timeout=limits.LOAD_TIMEOUT
    )
    name = "registration"
    if not answer.well_formed:
        return [CheckResult(name, "fail", f"plugin.register {answer.describe()}", answer.fix)]
    if answer.kind == "error":
        return [
            CheckResult(
                name,
                "fail",
                f"plugin.register answered error {answer.code}: {answer.message}",
                "register with the default config (enabled: true, priority: 0): a plugin "
                "that needs settings should load and say what is missing when used",
            )
        ]
    try:
        reg = parse_registration(answer.result, run.plugin_id)
    except PluginLoadError as exc:
        return [CheckResult(name, "fail", exc.message, REGISTRATION_FIX)]
    run.registration = reg
    meta = reg.metadata
    summary = (
        f"{meta.name} {meta.version} by {meta.author}, schema {reg.schema_version}; "
        f"capabilities: {', '.join(f for f in CAPABILITY_METHODS if f in reg.flags)}"
    )
    warnings = _registration_warnings(answer.result, reg)
    if warnings:
        return [CheckResult(name, "warn", "; ".join(warnings), REGISTRATION_FIX)]
    return [CheckResult(name, "pass", summary)]


def _registration_warnings(raw: Mapping[str, Any], reg: Registration) -> list[str]:
    """What the host accepts in a registration but the plugin probably did not mean."""
    warnings = []
    repo = reg.metadata.github_repository
    if not repo.startswith(("https://", "http://")):
        warnings.append(f"GitHubRepository {repo!r} is not an http(s) URL")
    seen: set[str] = set()
    for f in reg.metadata.config_fields:
        if f.name in seen:
            warnings.append(f"ConfigField {f.name!r} is declared twice")
        seen.add(f.name)
        if f.name in BASE_CONFIG:
            warnings.append(f"ConfigField {f.name!r} is a host setting, not the plugin's")
        if f.type == "enum" and not f.enum_values:
            warnings.append(f"ConfigField {f.name!r} is an enum without EnumValues")
        if f.type != "enum" and f.enum_values:
            warnings.append(f"ConfigField {f.name!r} has EnumValues but type {f.type}")
    capabilities = ci_get(raw, "capabilities")
    known = set(CAPABILITY_METHODS) | QUALIFIER_FLAGS
    if isinstance(capabilities, Mapping):
        for flag, value in capabilities.items():
            lowered = str(flag).casefold()
            if value is True and lowered not in known and not lowered.startswith("executor_"):
                warnings.append(f"unknown capability flag {flag!r} (ignored)")
    scope = reg.capabilities.get("executor_model_scope")
    if "executor" in reg.flags and scope not in (None, "", "both", "static", "oauth"):
        warnings.append(f"executor_model_scope {scope!r} is not both, static or oauth")
    warnings.extend(reg.warnings)
    return warnings


def lifecycle(run: Run, method: str, settings: Mapping[str, Any]) -> Registration | str:
    """The registration a lifecycle call answers, or why it is not one."""
    request = lifecycle_request(config_yaml(settings))
    answer = run.call(method, request, timeout=limits.LOAD_TIMEOUT)
    if not answer.well_formed:
        return answer.describe()
    if answer.kind == "error":
        return f"answered error {answer.code}: {answer.message}"
    try:
        return parse_registration(answer.result, run.plugin_id)
    except PluginLoadError as exc:
        return exc.message


def check_reconfigure(run: Run) -> list[CheckResult]:
    """plugin.reconfigure with a sample of every ConfigField answers a valid registration."""
    assert run.registration is not None
    fields = [f for f in run.registration.metadata.config_fields if f.name not in BASE_CONFIG]
    samples = {f.name: sample_value(f) for f in fields}
    outcome = lifecycle(run, Method.RECONFIGURE, {**BASE_CONFIG, **samples})
    if isinstance(outcome, Registration):
        shown = ", ".join(f"{k}: {orjson.dumps(v).decode()}" for k, v in samples.items())
        return [
            CheckResult(
                "reconfigure",
                "pass",
                f"answers a valid registration to a new config ({shown or 'no ConfigFields'})",
            )
        ]
    if run.stuck or not samples:
        return [CheckResult("reconfigure", "fail", outcome, REGISTRATION_FIX)]
    # The samples may be values the plugin cannot use; the base config tells whether
    # reconfigure works at all.
    fallback = lifecycle(run, Method.RECONFIGURE, BASE_CONFIG)
    if isinstance(fallback, Registration):
        return [
            CheckResult(
                "reconfigure",
                "warn",
                f"refuses values of its declared ConfigField types {samples!r}: {outcome}",
                "accept every value of a declared type, or declare a narrower one (an enum)",
            )
        ]
    return [CheckResult("reconfigure", "fail", fallback, REGISTRATION_FIX)]


FORMAT_FLAGS: Final = ("executor_input_formats", "executor_output_formats")


def check_executor_formats(run: Run) -> list[CheckResult]:
    """An executor declares the formats it takes and answers (docs/ABI.md 7.5)."""
    assert run.registration is not None
    name = "executor formats"
    if "executor" not in run.registration.flags:
        return [CheckResult(name, "skip", "not an executor")]
    missing = [flag for flag in FORMAT_FLAGS if not _formats(run.registration.capabilities, flag)]
    if missing:
        return [
            CheckResult(
                name,
                "warn",
                f"the executor declares no {' and no '.join(missing)}: the Go host registers "
                "it but fails every call (no input/output format fits)",
                "add " + ", ".join(f'{flag}: ["openai"]' for flag in missing) + " (format names "
                "or aliases such as chat-completions, responses, claude, gemini) to the "
                "capabilities of plugin.register",
            )
        ]
    shown = "; ".join(
        f"{flag}: {', '.join(_formats(run.registration.capabilities, flag))}"
        for flag in FORMAT_FLAGS
    )
    return [CheckResult(name, "pass", shown)]


def _formats(capabilities: Mapping[str, Any], flag: str) -> list[str]:
    """The declared formats of `flag`, without the empty and "none" entries the Go host drops."""
    value = ci_get(capabilities, flag)
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str) and v.strip() and v.strip().lower() != "none"]
