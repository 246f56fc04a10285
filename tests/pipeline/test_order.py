"""The pipeline's stages run in the Go host's order, each chaining on the previous one."""

from __future__ import annotations

from cliproxy_host.pipeline import ModelRequest

from .conftest import EXECUTOR, CallLog, MakeHost, StagePlugin

INTERCEPTOR = '"request_interceptor":true'


def test_interceptors_chain_around_route_and_executor_in_go_order(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host(
        {
            "i1": (stage("i1", INTERCEPTOR), 20),
            "i2": (stage("i2", INTERCEPTOR), 10),
            "rt": (stage("rt", '"model_router":true'), 5),
            "ex": (stage("ex", EXECUTOR), 0),
            "ri": (stage("ri", '"response_interceptor":true'), 0),
            "lc": (stage("lc", '"request_lifecycle_plugin":true,"usage_plugin":true'), 0),
        }
    )
    answer = host.execute(ModelRequest(model="m1", body=b"start"))
    assert answer.body == (
        b"start|i1:request.intercept_before|i2:request.intercept_before"
        b"|i1:request.intercept_after|i2:request.intercept_after"
        b"|ex:executor.execute|ri:response.intercept_after"
    )
    assert answer.executor == "ex"
    assert answer.headers["X-Executor"] == ("ex",)
    assert call_log.order(
        "model.route",
        "request.intercept_before",
        "request.intercept_after",
        "executor.execute",
        "usage.handle",
        "response.intercept_after",
        "request.complete",
    ) == [
        "rt:model.route",
        "i1:request.intercept_before",
        "i2:request.intercept_before",
        "i1:request.intercept_after",
        "i2:request.intercept_after",
        "ex:executor.execute",
        "lc:usage.handle",
        "ri:response.intercept_after",
        "lc:request.complete",
    ]
    after = call_log.calls("request.intercept_after")[0]["request"]
    assert after["ToFormat"] == "openai"
    assert call_log.calls("request.intercept_before")[0]["request"]["ToFormat"] == ""
    done = call_log.calls("request.complete")[0]["request"]
    assert done["Outcome"] == "succeeded"
    assert done["RequestID"] == answer.request_id == after["RequestID"]


TRANSLATOR = (
    '"request_translator":true,"response_translator":true,'
    '"response_before_translator":true,"response_after_translator":true'
)


def test_translation_runs_normalizers_then_translator_both_ways(
    stage: StagePlugin, make_host: MakeHost
) -> None:
    host = make_host(
        {
            "n1": (stage("n1", '"request_normalizer":true'), 20),
            "n2": (stage("n2", '"request_normalizer":true'), 10),
            "tr": (stage("tr", TRANSLATOR), 5),
            "ex": (stage("ex", EXECUTOR), 0),
        }
    )
    answer = host.execute(ModelRequest(model="m", body=b"s", entry_format="anthropic"))
    assert answer.body == (
        b"s|n1:request.normalize|n2:request.normalize|tr:request.translate"
        b"|ex:executor.execute"
        b"|tr:response.normalize_before|tr:response.translate|tr:response.normalize_after"
    )


def test_same_format_skips_translation_and_normalizers(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host(
        {
            "n1": (stage("n1", '"request_normalizer":true'), 20),
            "tr": (stage("tr", TRANSLATOR), 5),
            "ex": (stage("ex", EXECUTOR), 0),
        }
    )
    answer = host.execute(ModelRequest(model="m", body=b"s", entry_format="chat-completions"))
    assert answer.body == b"s|ex:executor.execute"
    assert call_log.calls("request.normalize") == []
    sent = call_log.calls("executor.execute")[0]["request"]
    assert (sent["SourceFormat"], sent["Format"]) == ("openai", "openai")


def test_model_router_picks_an_executor_over_priority(
    stage: StagePlugin, make_host: MakeHost
) -> None:
    route = '{"Handled":true,"TargetKind":"executor","Target":"low"}'
    host = make_host(
        {
            "rt": (stage("rt", '"model_router":true', PP_ROUTE=route), 0),
            "high": (stage("high", EXECUTOR), 20),
            "low": (stage("low", EXECUTOR), 1),
        }
    )
    assert host.execute(ModelRequest(model="m", body=b"s")).executor == "low"


def test_router_choosing_an_unfit_executor_falls_through(
    stage: StagePlugin, make_host: MakeHost
) -> None:
    route = '{"Handled":true,"TargetKind":"executor","Target":"gem"}'
    gemini = (
        '"executor":true,"executor_input_formats":["gemini"],"executor_output_formats":["gemini"]'
    )
    host = make_host(
        {
            "rt": (stage("rt", '"model_router":true', PP_ROUTE=route), 0),
            "gem": (stage("gem", gemini), 20),
            "ex": (stage("ex", EXECUTOR), 1),
        }
    )
    assert host.execute(ModelRequest(model="m", body=b"s")).executor == "ex"


def test_executor_listing_the_model_wins_over_higher_priority(
    stage: StagePlugin, make_host: MakeHost
) -> None:
    models = '{"Provider":"acme","Models":[{"ID":"m-own"}]}'
    host = make_host(
        {
            "first": (stage("first", EXECUTOR + ',"model_provider":true', PP_MODELS=models), 1),
            "other": (
                stage(
                    "other",
                    EXECUTOR + ',"model_provider":true',
                    PP_MODELS='{"Provider":"z","Models":[{"ID":"x"}]}',
                ),
                30,
            ),
        }
    )
    assert host.execute(ModelRequest(model="m-own")).executor == "first"
    assert host.execute(ModelRequest(model="x")).executor == "other"


def test_nested_run_skips_the_calling_plugins_own_stages_and_usage(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    both = INTERCEPTOR + ',"request_lifecycle_plugin":true,"usage_plugin":true'
    host = make_host(
        {
            "caller": (stage("caller", both + ',"model_router":true'), 20),
            "other": (stage("other", both), 10),
            "ex": (stage("ex", EXECUTOR), 0),
        }
    )
    answer = host.execute(ModelRequest(model="m", body=b"s", caller="caller"))
    assert answer.body == (
        b"s|other:request.intercept_before|other:request.intercept_after|ex:executor.execute"
    )
    called = {c["plugin"] for c in call_log.calls() if not c["method"].startswith("plugin.")}
    assert called == {"other", "ex"}, [
        c["method"] for c in call_log.calls() if c["plugin"] == "caller"
    ]
    assert call_log.order("request.complete") == ["other:request.complete"]
    assert call_log.calls("usage.handle") == []
    sent = call_log.calls("executor.execute")[0]["request"]
    assert sent["Metadata"] == {"source": "plugin_host_model_callback"}


def test_isolated_and_in_process_stages_chain_alike(
    stage: StagePlugin, make_host: MakeHost
) -> None:
    host = make_host(
        {
            "far": (stage("far", INTERCEPTOR), 20),
            "near": (stage("near", INTERCEPTOR), 10),
            "ex": (stage("ex", EXECUTOR), 0),
        },
        isolated=frozenset({"far", "ex"}),
    )
    answer = host.execute(ModelRequest(model="m", body=b"s"))
    assert answer.body == (
        b"s|far:request.intercept_before|near:request.intercept_before"
        b"|far:request.intercept_after|near:request.intercept_after|ex:executor.execute"
    )
    chunks = list(host.execute_stream(ModelRequest(model="m", body=b"s", stream=True)))
    assert [c.payload for c in chunks][1:] == [b"|ex:c1", b"|ex:c2"]
