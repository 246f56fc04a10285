"""The pipeline's own work per request: what it reads, builds and encodes only once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host import PluginHost
from cliproxy_host.envelope import b64decode
from cliproxy_host.host.pipeline_source import HostSource
from cliproxy_host.pipeline import ModelRequest, ModelResponse, Pipeline, PluginStream
from cliproxy_host.pipeline.models import new_response
from tests.conftest import REPO, CompilePlugin

from .conftest import MakeHost

# Pass-through stages: the interceptor answers {} (the request stays as it was), the
# executor answers the Payload it was sent.
PASS_SRC = REPO / "bench" / "plugins" / "pipeline_plugin.c"
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


class _Counting:
    """The host as a PluginSource, counting what the pipeline asks of it."""

    def __init__(self, host: PluginHost) -> None:
        self.inner = HostSource(lambda: host._snapshot, host._natives, host.call, host.call_stream)
        self.participant_reads = 0
        self.requests: list[tuple[str, str, Mapping[str, Any]]] = []

    def revision(self) -> object:
        return self.inner.revision()

    def participants(self, method: str) -> Any:
        self.participant_reads += 1
        return self.inner.participants(method)

    def call(self, plugin_id: str, method: str, request: Mapping[str, Any]) -> Any:
        self.requests.append((plugin_id, method, request))
        return self.inner.call(plugin_id, method, request)

    def call_stream(
        self, plugin_id: str, method: str, request: Mapping[str, Any], *, callback_id: Any = None
    ) -> PluginStream:
        return self.inner.call_stream(plugin_id, method, request, callback_id=callback_id)

    def sent(self, method: str) -> list[tuple[str, Mapping[str, Any]]]:
        return [(pid, req) for pid, m, req in self.requests if m == method]


@pytest.fixture
def pass_through(compile_plugin: CompilePlugin, make_host: MakeHost) -> PluginHost:
    """Two pass-through interceptors (i1 before i2) and a pass-through executor."""
    interceptor: Path = compile_plugin(source=PASS_SRC, BP_INTERCEPTOR=True)
    executor: Path = compile_plugin(source=PASS_SRC)
    return make_host({"i1": (interceptor, 20), "i2": (interceptor, 10), "ex": (executor, 0)})


def test_a_run_over_unchanged_plugins_reads_no_participant_list(
    pass_through: PluginHost,
) -> None:
    source = _Counting(pass_through)
    pipeline = Pipeline(source)
    assert pipeline.execute(ModelRequest(model="m", body=BODY)).body == BODY
    source.participant_reads = 0
    answer = pipeline.execute(ModelRequest(model="m", body=BODY))
    assert answer.body == BODY
    assert answer.executor == "ex"
    assert source.participant_reads == 0


def test_pass_through_interceptors_share_one_request_and_one_encoding_of_the_body(
    pass_through: PluginHost,
) -> None:
    source = _Counting(pass_through)
    answer = Pipeline(source).execute(ModelRequest(model="m", body=BODY))
    assert answer.body == BODY
    before = source.sent("request.intercept_before")
    after = source.sent("request.intercept_after")
    [(executor, sent)] = source.sent("executor.execute")
    assert [pid for pid, _ in before] == [pid for pid, _ in after] == ["i1", "i2"]
    assert executor == "ex"
    # Nobody changed the request, so each stage built it once for both interceptors...
    assert before[0][1] is before[1][1]
    assert after[0][1] is after[1][1]
    # ...and the body went to base64 once for the whole run.
    encoded = before[0][1]["Body"]
    assert b64decode(encoded, "Body") == BODY
    assert after[0][1]["Body"] is encoded
    assert sent["Payload"] is encoded
    assert sent["OriginalRequest"] is encoded


def test_a_host_handler_that_changes_its_request_in_place_does_not_leak_to_the_next(
    pass_through: PluginHost,
) -> None:
    seen: list[dict[str, Any]] = []

    def scribble(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        request["Body"] = "c2NyaWJibGVk"  # "scribbled", written into the dict it was given
        return {}

    pass_through.register_native("request.intercept_before", "scribbler", scribble)
    source = _Counting(pass_through)
    answer = Pipeline(source).execute(ModelRequest(model="m", body=BODY))
    assert len(seen) == 1
    assert answer.body == BODY
    before = source.sent("request.intercept_before")
    assert [pid for pid, _ in before] == ["i1", "i2"]
    assert before[0][1] is not seen[0]
    assert b64decode(before[0][1]["Body"], "Body") == BODY


def test_new_response_makes_the_same_frozen_model_response() -> None:
    made = new_response(b"b", {"X": ("1",)}, "ex", "req-1", status_code=201, problems=())
    assert made == ModelResponse(b"b", {"X": ("1",)}, "ex", "req-1", 201, ())
    assert type(made) is ModelResponse
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.body = b"other"  # type: ignore[misc]


def test_a_host_handler_registered_after_a_run_takes_part_in_the_next(
    pass_through: PluginHost,
) -> None:
    # The pipeline keeps its stage lists per set of handlers: registering one is a new set.
    assert pass_through.execute(ModelRequest(model="m", body=BODY)).body == BODY
    seen: list[str] = []

    def note(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request["Model"])
        return {}

    pass_through.register_native("request.intercept_before", "late", note)
    assert pass_through.execute(ModelRequest(model="m", body=BODY)).body == BODY
    assert seen == ["m"]
