"""Envelopes: encoding, decoding, case-insensitive reads, base64 fields, error mapping."""

from __future__ import annotations

import orjson
import pytest

from cliproxy_host import envelope as env
from cliproxy_host import errors


def test_ok_and_error_encode_the_abi_shapes() -> None:
    assert orjson.loads(env.ok({"a": 1})) == {"ok": True, "result": {"a": 1}}
    assert orjson.loads(env.error("invalid_request", "bad", retryable=False, http_status=400)) == {
        "ok": False,
        "error": {
            "code": "invalid_request",
            "message": "bad",
            "retryable": False,
            "http_status": 400,
        },
    }
    assert orjson.loads(env.error("x", "y")) == {
        "ok": False,
        "error": {"code": "x", "message": "y"},
    }


def test_decode_answers_the_result() -> None:
    assert env.decode(b'{"ok":true,"result":{"x":1}}') == {"x": 1}
    assert env.decode(b'{"ok":true}') == {}


def test_decode_reads_keys_case_insensitively() -> None:
    assert env.decode(b'{"OK":true,"Result":{"x":1}}') == {"x": 1}
    with pytest.raises(errors.PluginError) as info:
        env.decode(
            b'{"Ok":false,"Error":{"Code":"c","Message":"m","Retryable":true,"HTTP_Status":503}}'
        )
    assert (info.value.code, info.value.message, info.value.retryable, info.value.http_status) == (
        "c",
        "m",
        True,
        503,
    )


def test_error_envelope_becomes_plugin_error_naming_plugin_and_method() -> None:
    with pytest.raises(errors.PluginError) as info:
        env.decode(
            b'{"ok":false,"error":{"code":"quota","message":"later"}}',
            plugin_id="p1",
            method="executor.execute",
        )
    assert str(info.value) == "plugin p1, executor.execute: quota: later"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty response"),
        (b"not json", "not JSON"),
        (b'{"ok":true,"result":"\xff"}', "not valid UTF-8"),
        (b"[1,2]", "not an envelope"),
        (b'{"ok":"yes"}', "not an envelope"),
        (b'{"ok":false,"error":{"message":"no code"}}', "not an envelope"),
    ],
)
def test_malformed_responses_are_response_errors(data: bytes, fragment: str) -> None:
    with pytest.raises(errors.PluginResponseError, match=fragment) as info:
        env.decode(data, plugin_id="p", method="m")
    assert info.value.code == "invalid_response"
    assert info.value.plugin_id == "p"


def test_ci_get_prefers_the_exact_spelling() -> None:
    assert env.ci_get({"Body": 1, "body": 2}, "body") == 2
    assert env.ci_get({"Body": 1}, "body") == 1
    assert env.ci_get({"x": 1}, "body", "d") == "d"


def test_base64_fields_round_trip_and_name_the_field_on_error() -> None:
    assert env.b64decode(env.b64encode(b"\x00\xffhi"), "Body") == b"\x00\xffhi"
    assert env.b64decode(None, "Body") == b""
    assert env.b64decode("", "Body") == b""
    with pytest.raises(ValueError, match="'Body' is not valid base64"):
        env.b64decode("***", "Body")
    with pytest.raises(ValueError, match="'Body' must be a base64 string"):
        env.b64decode(12, "Body")


def test_failed_call_uses_an_error_envelope_when_there_is_one() -> None:
    err = env.failed_call_error(
        3,
        b'{"ok":false,"error":{"code":"quota_exceeded","message":"later","retryable":true}}',
        plugin_id="p",
        method="m",
    )
    assert (err.code, err.message, err.retryable) == ("quota_exceeded", "later", True)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"boom", "plugin call m returned 4: boom"),
        (b"", "plugin call m returned 4: (no response)"),
        (b'{"ok":true,"result":{}}', 'plugin call m returned 4: {"ok":true,"result":{}}'),
    ],
)
def test_failed_call_without_error_envelope_reports_rc_and_text(data: bytes, text: str) -> None:
    err = env.failed_call_error(4, data, plugin_id="p", method="m")
    assert err.code == "plugin_call_failed"
    assert err.message == text


def test_plugin_error_round_trips_through_an_envelope() -> None:
    err = errors.PluginError("m", code="c", retryable=False, http_status=418)
    with pytest.raises(errors.PluginError) as info:
        env.decode(err.to_envelope())
    assert info.value.error_dict() == err.error_dict()
