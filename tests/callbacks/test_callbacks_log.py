"""host.log through HostCallbacks: levels, messages, fields and malformed requests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from cliproxy_host.callbacks import HostCallbacks
from cliproxy_host.callbacks.log import TRACE
from cliproxy_host.config.schema import HttpPolicy
from cliproxy_host.gate import gated

LOGGER = "cliproxy_host.plugin.demo"


@pytest.fixture
def callbacks() -> Iterator[HostCallbacks]:
    handler = HostCallbacks(HttpPolicy())
    yield handler
    handler.close()


def log(callbacks: HostCallbacks, request: object, plugin_id: str = "demo") -> Any:
    return orjson.loads(gated(callbacks)(plugin_id, "host.log", orjson.dumps(request)))


def only_record(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    records = [r for r in caplog.records if r.name.startswith("cliproxy_host.plugin.")]
    assert len(records) == 1
    return records[0]


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("trace", TRACE),
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("INFO", logging.INFO),
        ("warn", logging.WARNING),
        ("Warning", logging.WARNING),
        ("error", logging.ERROR),
        ("fatal", logging.CRITICAL),
        ("chatty", logging.DEBUG),
        ("", logging.DEBUG),
        (None, logging.DEBUG),
        (3, logging.DEBUG),
    ],
)
def test_levels_map_case_insensitively_and_unknown_ones_to_debug(
    callbacks: HostCallbacks, caplog: pytest.LogCaptureFixture, level: object, expected: int
) -> None:
    caplog.set_level(TRACE, logger=LOGGER)
    assert log(callbacks, {"level": level, "message": "hello"}) == {"ok": True, "result": {}}
    record = only_record(caplog)
    assert record.levelno == expected
    assert record.getMessage() == "hello"


def test_trace_level_has_a_name() -> None:
    assert logging.getLevelName(TRACE) == "TRACE"


def test_record_carries_plugin_id_logger_name_and_fields(
    callbacks: HostCallbacks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cliproxy_host.plugin")
    fields = {"user": "ann", "count": 3, "ok": True, "nested": {"a": [1, 2]}, "none": None}
    log(callbacks, {"level": "info", "message": "login", "fields": fields}, "auth-1")
    record = only_record(caplog)
    assert record.name == "cliproxy_host.plugin.auth-1"
    assert record.plugin_id == "auth-1"  # type: ignore[attr-defined]
    assert record.plugin_fields == fields  # type: ignore[attr-defined]
    assert record.getMessage() == 'login user=ann count=3 ok=true nested={"a":[1,2]} none=null'


def test_field_values_with_spaces_quotes_or_equals_are_quoted(
    callbacks: HostCallbacks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    fields = {"a": "two words", "b": 'say "hi"', "c": "k=v", "d": "", "e": "line\nbreak"}
    log(callbacks, {"level": "info", "message": "m", "fields": fields})
    assert only_record(caplog).getMessage() == (
        'm a="two words" b="say \\"hi\\"" c="k=v" d="" e="line\\nbreak"'
    )


def test_keys_are_read_case_insensitively(
    callbacks: HostCallbacks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    log(callbacks, {"Level": "WARN", "MESSAGE": "shouting", "Fields": {"k": "v"}})
    record = only_record(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "shouting k=v"


@pytest.mark.parametrize("message", [None, ""])
def test_empty_message_becomes_plugin_log(
    callbacks: HostCallbacks, caplog: pytest.LogCaptureFixture, message: str | None
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    log(callbacks, {"level": "info", "message": message, "fields": {"k": 1}})
    assert only_record(caplog).getMessage() == "plugin log k=1"


def test_odd_message_and_fields_are_still_logged(
    callbacks: HostCallbacks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    log(callbacks, {"level": "info", "message": 42, "fields": ["x", 1]})
    assert only_record(caplog).getMessage() == '42 fields=["x",1]'


def test_percent_signs_in_a_message_are_not_format_directives(
    callbacks: HostCallbacks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    log(callbacks, {"level": "info", "message": "100%s %d done"})
    assert only_record(caplog).getMessage() == "100%s %d done"


def test_disabled_level_logs_nothing_and_still_answers_ok(
    callbacks: HostCallbacks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert log(callbacks, {"level": "trace", "message": "noise"})["ok"] is True
    assert not [r for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize("request_bytes", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_malformed_request_answers_invalid_request(
    callbacks: HostCallbacks, request_bytes: bytes
) -> None:
    answer = orjson.loads(gated(callbacks)("demo", "host.log", request_bytes))
    assert answer["ok"] is False
    assert answer["error"]["code"] == "invalid_request"
    assert answer["error"]["http_status"] == 400
    assert "host.log" in answer["error"]["message"]


def test_a_failing_logger_answers_host_call_failed(
    callbacks: HostCallbacks, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(logging.Logger, "log", explode)
    answer = log(callbacks, {"level": "info", "message": "m"}, "broken")
    assert answer["ok"] is False
    assert answer["error"]["code"] == "host_call_failed"
    assert "disk full" in answer["error"]["message"]
    failures = [r for r in caplog.records if r.name == "cliproxy_host.callbacks"]
    assert len(failures) == 1
    assert "broken" in failures[0].getMessage()
    assert failures[0].exc_info is not None
