"""A failing stage is typed, names its plugin and method, and the run goes on as upstream."""

from __future__ import annotations

import pytest

from cliproxy_host.errors import NoHandler, PluginError, RequestRejected, UnsupportedFormat
from cliproxy_host.pipeline import ModelRequest

from .conftest import EXECUTOR, CallLog, MakeHost, StagePlugin
from .test_order import TRANSLATOR

OBSERVER = '"request_lifecycle_plugin":true,"usage_plugin":true'

STAGES = {
    "model.route": '"model_router":true',
    "request.intercept_before": '"request_interceptor":true',
    "request.intercept_after": '"request_interceptor":true',
    "request.normalize": '"request_normalizer":true',
    "request.translate": '"request_translator":true',
    "response.normalize_before": '"response_before_translator":true',
    "response.translate": '"response_translator":true',
    "response.normalize_after": '"response_after_translator":true',
    "response.intercept_after": '"response_interceptor":true',
    "usage.handle": '"usage_plugin":true',
    "request.complete": '"request_lifecycle_plugin":true',
}


@pytest.mark.parametrize("method", sorted(STAGES))
def test_a_failing_stage_is_skipped_and_reported_with_its_plugin(
    method: str, stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host(
        {
            "bad": (stage("bad", STAGES[method], PP_FAIL=method), 50),
            "tr": (stage("tr", TRANSLATOR), 5),
            "ex": (stage("ex", EXECUTOR), 0),
            "lc": (stage("lc", OBSERVER), 0),
        }
    )
    answer = host.execute(ModelRequest(model="m", body=b"s", entry_format="claude"))
    assert b"|ex:executor.execute" in answer.body
    assert f"bad:{method}".encode() not in answer.body
    [problem] = answer.problems
    assert type(problem) is PluginError
    assert (problem.plugin_id, problem.method, problem.code) == ("bad", method, "stage_broke")
    assert call_log.calls("request.complete")[-1]["plugin"] == "lc"


def test_a_failing_stream_chunk_interceptor_is_skipped(
    stage: StagePlugin, make_host: MakeHost
) -> None:
    method = "response.intercept_stream_chunk"
    host = make_host(
        {
            "bad": (stage("bad", '"response_stream_interceptor":true', PP_FAIL=method), 50),
            "ex": (stage("ex", EXECUTOR), 0),
        }
    )
    chunks = list(host.execute_stream(ModelRequest(model="m", body=b"s", stream=True)))
    assert [c.payload for c in chunks] == [b"s|ex:c0", b"|ex:c1", b"|ex:c2"]


def test_executor_error_is_raised_and_observers_still_hear_of_it(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host(
        {
            "ex": (stage("ex", EXECUTOR, PP_FAIL="executor.execute"), 0),
            "lc": (stage("lc", OBSERVER), 0),
        }
    )
    with pytest.raises(PluginError) as info:
        host.execute(ModelRequest(model="m", body=b"s"))
    assert (info.value.plugin_id, info.value.method, info.value.code) == (
        "ex",
        "executor.execute",
        "stage_broke",
    )
    assert call_log.order("usage.handle", "request.complete") == [
        "lc:usage.handle",
        "lc:request.complete",
    ]
    assert call_log.calls("usage.handle")[0]["request"]["Failed"] is True
    assert call_log.calls("request.complete")[0]["request"]["Outcome"] == "failed"


def test_stream_executor_error_is_raised_and_reported(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host(
        {
            "ex": (stage("ex", EXECUTOR, PP_FAIL="executor.execute_stream"), 0),
            "lc": (stage("lc", OBSERVER), 0),
        }
    )
    with pytest.raises(PluginError) as info:
        list(host.execute_stream(ModelRequest(model="m", body=b"s", stream=True)))
    assert (info.value.plugin_id, info.value.method) == ("ex", "executor.execute_stream")
    assert call_log.calls("request.complete")[0]["request"]["Outcome"] == "failed"


def test_interceptor_terminate_rejects_with_its_status(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host(
        {
            "stop": (
                stage(
                    "stop", '"request_interceptor":true', PP_TERMINATE="request.intercept_before"
                ),
                10,
            ),
            "ex": (stage("ex", EXECUTOR), 0),
            "lc": (stage("lc", OBSERVER), 0),
        }
    )
    with pytest.raises(RequestRejected) as info:
        host.execute(ModelRequest(model="m", body=b"s"))
    assert (info.value.plugin_id, info.value.http_status) == ("stop", 429)
    assert info.value.response_body == b"go away"
    assert call_log.calls("executor.execute") == []
    assert call_log.calls("request.complete")[0]["request"]["Outcome"] == "rejected"


def test_no_format_fits_is_unsupported_format(stage: StagePlugin, make_host: MakeHost) -> None:
    gemini = (
        '"executor":true,"executor_input_formats":["gemini"],"executor_output_formats":["gemini"]'
    )
    host = make_host({"gem": (stage("gem", gemini), 0)})
    with pytest.raises(UnsupportedFormat, match="does not support input format 'openai'"):
        host.execute(ModelRequest(model="m", body=b"s"))


def test_no_executor_at_all_is_no_handler(stage: StagePlugin, make_host: MakeHost) -> None:
    host = make_host({"i": (stage("i", '"request_interceptor":true'), 0)})
    with pytest.raises(NoHandler, match="no executor serves model 'm'"):
        host.execute(ModelRequest(model="m", body=b"s"))
