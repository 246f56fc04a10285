"""The answer gate: HostCallbacks raises, the gate answers the plugin an envelope."""

from __future__ import annotations

import logging

import orjson
import pytest

from cliproxy_host import errors
from cliproxy_host.callbacks import HostCallbacks
from cliproxy_host.config.schema import HttpPolicy
from cliproxy_host.gate import gated


def test_host_callbacks_raise_and_the_gate_answers_the_error_envelope() -> None:
    callbacks = HostCallbacks(HttpPolicy())
    try:
        with pytest.raises(errors.HostCallFailed, match=r"unsupported host callback host\.nope"):
            callbacks("p", "host.nope", b"{}")
        with pytest.raises(errors.InvalidRequest):
            callbacks("p", "host.log", b"[]")
        answer = orjson.loads(gated(callbacks)("p", "host.log", b"[]"))
        assert answer["ok"] is False
        assert answer["error"]["code"] == "invalid_request"
    finally:
        callbacks.close()


def test_any_other_exception_is_logged_and_answered_host_call_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(plugin_id: str, method: str, request: bytes) -> bytes:
        raise KeyError("lost")

    caplog.set_level(logging.ERROR, logger="cliproxy_host.callbacks")
    answer = orjson.loads(gated(broken)("p9", "host.thing", b"{}"))
    assert answer["error"]["code"] == "host_call_failed"
    assert "host.thing" in answer["error"]["message"]
    [record] = [r for r in caplog.records if r.name == "cliproxy_host.callbacks"]
    assert "p9" in record.getMessage()
    assert record.exc_info is not None
