"""Executor formats (ABI.md 7.5 upstream): aliases, selection, and reporting at registration."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cliproxy_host.check import run_checks
from cliproxy_host.errors import UnsupportedFormat
from cliproxy_host.pipeline import formats
from tests.conftest import HostFactory
from tests.serverutil import run_server

from .conftest import EXECUTOR, MakeHost, StagePlugin


def test_aliases_fold_case_insensitively_empties_drop_duplicates_go() -> None:
    raw = [
        "Chat-Completions",
        "openai",
        "",
        " none ",
        "RESPONSES",
        "openai_responses",
        "Anthropic",
        "gemini",
        "claude",
        3,
    ]
    assert formats.canonical_list(raw) == ("openai", "openai-response", "claude", "gemini")
    assert formats.canonical_list(None) == ()


def _never(a: str, b: str) -> bool:
    return a == b


def _always(a: str, b: str) -> bool:
    return True


def test_input_is_the_requested_format_if_listed_else_the_first_reachable() -> None:
    assert formats.select_input("x", ("claude", "openai"), "openai", _never) == "openai"
    assert formats.select_input("x", ("claude", "gemini"), "openai", _always) == "claude"
    with pytest.raises(UnsupportedFormat, match="does not support input format 'openai'"):
        formats.select_input("x", ("claude",), "openai", _never)
    with pytest.raises(UnsupportedFormat, match="declares no input formats"):
        formats.select_input("x", (), "openai", _always)


def test_output_is_requested_else_input_else_the_first_translatable() -> None:
    assert formats.select_output("x", ("gemini", "openai"), "openai", "gemini", _never) == "openai"
    assert formats.select_output("x", ("claude", "gemini"), "openai", "gemini", _always) == "gemini"
    assert formats.select_output("x", ("claude", "gemini"), "openai", "codex", _always) == "claude"
    with pytest.raises(UnsupportedFormat, match="does not support output format 'openai'"):
        formats.select_output("x", ("claude",), "openai", "claude", _never)


def test_executor_without_formats_is_reported_once_at_registration(
    stage: StagePlugin,
    make_host: MakeHost,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    bare = stage("bare", '"executor":true')
    with caplog.at_level(logging.WARNING):
        host = make_host({"bare": (bare, 0)})
    warned = [r for r in caplog.records if "declares no input or output formats" in r.message]
    assert len(warned) == 1
    assert "bare" in warned[0].getMessage()
    info = host.plugin("bare")
    assert info is not None
    assert any("executor_input_formats" in w for w in info.warnings)
    report = run_checks(bare, cycles=1)
    [reg] = [r for r in report.results if r.name == "registration"]
    assert reg.status == "warn"
    assert "declares no input or output formats" in reg.reason


def test_management_list_entry_carries_the_registration_warning(
    stage: StagePlugin, host_factory: HostFactory
) -> None:
    host_factory.add("bare", stage("bare", '"executor":true'))
    host_factory.add("fine", stage("fine", EXECUTOR))
    path = host_factory.write_config({"bare": {"enabled": True}, "fine": {"enabled": True}})
    with run_server(path) as running:
        assert running.service.wait_ready(30)
        body = running.client.get("/v0/management/plugins").json()
    warnings = {p["id"]: p["warnings"] for p in body["plugins"]}
    assert warnings["fine"] == []
    assert len(warnings["bare"]) == 1
    assert "executor_input_formats and executor_output_formats" in warnings["bare"][0]
