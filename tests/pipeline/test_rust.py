"""The pipeline with the Rust example plugin (built by cargo, no crates) among C stages."""

from __future__ import annotations

from pathlib import Path

import orjson

from cliproxy_host.pipeline import ModelRequest

from .conftest import EXECUTOR, MakeHost, StagePlugin
from .test_order import TRANSLATOR


def test_rust_normalizer_chains_between_c_stages(
    examples: dict[str, Path], stage: StagePlugin, make_host: MakeHost
) -> None:
    host = make_host(
        {
            "n1": (stage("n1", '"request_normalizer":true'), 20),
            "simple-rust": (examples["simple-rust"], 10),
            "tr": (stage("tr", TRANSLATOR), 5),
            "ex": (
                stage(
                    "ex",
                    EXECUTOR + ',"model_provider":true',
                    PP_MODELS='{"Provider":"p","Models":[{"ID":"m"}]}',
                ),
                0,
            ),
        }
    )
    answer = host.execute(ModelRequest(model="m", body=b"s", entry_format="claude"))
    assert answer.executor == "ex"
    assert answer.body.startswith(
        b"S|N1:REQUEST.NORMALIZE|tr:request.translate|ex:executor.execute"
    )


def test_rust_executor_serves_a_request_through_c_interceptors(
    examples: dict[str, Path], stage: StagePlugin, make_host: MakeHost
) -> None:
    host = make_host(
        {
            "i1": (stage("i1", '"request_interceptor":true'), 20),
            "simple-rust": (examples["simple-rust"], 0),
        }
    )
    body = orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})
    answer = host.execute(ModelRequest(model="m", body=body, entry_format="chat-completions"))
    assert answer.executor == "simple-rust"
    # the interceptor's mark reached the Rust executor, which upper-cased the payload
    assert answer.body == body.upper() + b"|I1:REQUEST.INTERCEPT_BEFORE|I1:REQUEST.INTERCEPT_AFTER"
    assert answer.headers["X-Plugin"] == ("simple-rust",)
