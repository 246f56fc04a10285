"""host.model.*: C plugins whose executors run other models through the host's pipeline."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cliproxy_host.config.schema import PluginsSection
from cliproxy_host.errors import InvalidRequest, ModelCallTooDeep
from tests.conftest import REPO, CompilePlugin

from .conftest import MakeHost

MC_SRC = REPO / "tests" / "plugins" / "modelcaller.c"
MODES = pytest.mark.parametrize("isolated", [False, True], ids=["inprocess", "isolated"])


def caller(compile_plugin: CompilePlugin, **knobs: Any) -> Path:
    return compile_plugin(source=MC_SRC, **knobs)


def request(model: str, body: bytes = b"hi") -> dict[str, Any]:
    return {"model": model, "body": base64.b64encode(body).decode()}


@MODES
def test_an_executor_runs_another_plugins_model(
    make_host: MakeHost, compile_plugin: CompilePlugin, server: Path, isolated: bool
) -> None:
    host = make_host(
        {"caller": caller(compile_plugin, MC_NAME="caller"), "server": server}, isolated=isolated
    )
    answer = host.execute(request("outer"))
    assert answer.executor == "caller"
    assert answer.body == b"hi|server:executor.execute|caller"
    assert answer.headers["X-Caller"] == ("caller",)


@MODES
def test_a_plugin_calling_its_own_model_hits_the_depth_limit_and_the_host_carries_on(
    make_host: MakeHost, compile_plugin: CompilePlugin, server: Path, isolated: bool
) -> None:
    looping = caller(compile_plugin, MC_NAME="loop", MC_MODEL="outer", MC_TARGET="outer")
    host = make_host({"loop": looping, "server": server}, isolated=isolated, depth=3)
    with pytest.raises(ModelCallTooDeep) as caught:
        host.execute(request("outer"))
    message = caught.value.message
    assert "loop -> loop -> loop -> loop" in message
    assert "plugins.model-call-depth" in message
    # The host and the other plugin carry on; the loop's scopes and streams are gone.
    assert host.execute(request("inner")).body == b"hi|server:executor.execute"
    assert len(host.scopes) == 0


def test_the_depth_limit_counts_without_an_echoed_callback_id_in_process(
    make_host: MakeHost, compile_plugin: CompilePlugin
) -> None:
    looping = caller(compile_plugin, MC_NAME="loop", MC_TARGET="outer", MC_NO_ID=True)
    host = make_host({"loop": looping})
    with pytest.raises(ModelCallTooDeep, match=r"over plugins\.model-call-depth \(8\)"):
        host.execute(request("outer"))


def test_the_depth_key_is_bounded() -> None:
    assert PluginsSection().model_call_depth == 8
    assert PluginsSection.model_validate({"model-call-depth": 64}).model_call_depth == 64
    for bad in (0, 65, "8"):
        with pytest.raises(ValidationError):
            PluginsSection.model_validate({"model-call-depth": bad})


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        ("host.model.execute", {"model": "inner", "stream": False, "body": "not base64!"}),
        ("host.model.execute", {"model": "inner", "stream": True, "body": ""}),
        ("host.model.execute", {"model": "inner", "stream": "no"}),
        ("host.model.execute_stream", {"model": "inner", "stream": False}),
        ("host.model.execute_stream", {"model": "inner"}),
        ("host.model.execute", {"model": "", "stream": False}),
    ],
)
def test_bad_requests_answer_invalid_request(
    make_host: MakeHost,
    compile_plugin: CompilePlugin,
    server: Path,
    method: str,
    raw: dict[str, Any],
) -> None:
    bad = caller(compile_plugin, MC_NAME="bad", MC_METHOD=method, MC_REQUEST=json.dumps(raw))
    host = make_host({"bad": bad, "server": server})
    with pytest.raises(InvalidRequest) as caught:
        host.execute(request("outer"))
    assert method in caught.value.message
    assert host.execute(request("inner")).body == b"hi|server:executor.execute"
