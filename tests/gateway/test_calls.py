"""`POST /v1/plugins/{id}/{method}` and `POST /v1/dispatch/{method}` over real C and Rust
plugins: each dispatch mode, the error tree's statuses, refused methods and bad bodies."""

from __future__ import annotations

import base64

import httpx
import pytest

from cliproxy_host.gateway.app import MAX_BODY_BYTES

from .conftest import KEY, ServerFactory, bearer

REQUEST = {"Model": "m1", "Payload": base64.b64encode(b"hello").decode()}


def test_a_plugin_call_answers_the_result_of_its_envelope(gateway: ServerFactory) -> None:
    with (
        gateway([KEY], plugins=("simple-c",)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY)) as http,
    ):
        answer = http.post("/v1/plugins/simple-c/executor.execute", json=REQUEST)
        assert answer.status_code == 200, answer.text
        assert answer.json() == server.service.host.call("simple-c", "executor.execute", REQUEST)


def test_dispatch_first_answers_the_first_plugin_by_priority(gateway: ServerFactory) -> None:
    entries = {"simple-c": {"priority": 1}, "simple-rust": {"priority": 9}}
    with (
        gateway([KEY], plugins=("simple-c", "simple-rust"), entries=entries) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY)) as http,
    ):
        answer = http.post("/v1/dispatch/executor.identifier", json={})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"identifier": "simple-rust"}


def test_dispatch_chain_answers_the_request_as_the_stages_left_it(
    gateway: ServerFactory,
) -> None:
    body = {"Body": base64.b64encode(b"Mixed Case").decode(), "Model": "m1"}
    with (
        gateway([KEY], plugins=("simple-rust",)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY)) as http,
    ):
        answer = http.post("/v1/dispatch/request.normalize", json=body)
        assert answer.status_code == 200, answer.text
        normalized = server.service.host.call("simple-rust", "request.normalize", body)["Body"]
        assert answer.json() == {**body, "Body": normalized}
        assert normalized != body["Body"]  # the stage did change it


def test_dispatch_broadcast_answers_each_observer(gateway: ServerFactory) -> None:
    with (
        gateway([KEY], plugins=("tp", "simple-c")) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY)) as http,
    ):
        answer = http.post("/v1/dispatch/usage.handle", json={"Model": "m1"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == [{"plugin": "tp", "result": {}}]
        assert server.service.host.call("tp", "usage_count", {}) == {"count": 1}


def test_dispatch_with_no_provider_answers_501_no_handler(gateway: ServerFactory) -> None:
    with (
        gateway([KEY], plugins=("simple-c",)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY)) as http,
    ):
        answer = http.post("/v1/dispatch/scheduler.pick", json={})
        assert answer.status_code == 501
        assert answer.json()["error"]["code"] == "no_handler"
        assert "scheduler" in answer.json()["error"]["message"]


def test_plugin_failures_carry_the_status_and_retryable_of_their_error_class(
    gateway: ServerFactory,
) -> None:
    with (
        gateway([KEY], plugins=("simple-c",)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY)) as http,
    ):
        bad = http.post("/v1/plugins/simple-c/executor.execute", json={"Payload": "%%%"})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_request"
        assert bad.json()["error"]["plugin"] == "simple-c"
        assert bad.json()["error"]["retryable"] is False
        missing = http.post("/v1/plugins/nobody/executor.execute", json={})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "plugin_not_found"


@pytest.mark.parametrize(
    "method",
    [
        "plugin.register",
        "plugin.shutdown",
        "management.handle",
        "management.register",
        "auth.refresh",
        "auth.login.start",
        "command_line.execute",
    ],
)
def test_lifecycle_and_operator_methods_are_never_reachable(
    gateway: ServerFactory, method: str
) -> None:
    with (
        gateway([KEY], plugins=("simple-c",)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY)) as http,
    ):
        for path in (f"/v1/plugins/simple-c/{method}", f"/v1/dispatch/{method}"):
            answer = http.post(path, json={})
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"]["code"] == "method_not_served"
            assert "never serves" in answer.json()["error"]["message"]


def test_methods_outside_the_capabilities_are_not_served(gateway: ServerFactory) -> None:
    with (
        gateway([KEY], plugins=("sp",)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY)) as http,
    ):
        # sp answers `host_call` from Python; over HTTP it would be a door to host.*.
        refused = http.post("/v1/plugins/sp/host_call", json={})
        assert refused.status_code == 400  # not even a method name
        refused = http.post("/v1/plugins/sp/host.call", json={})
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "method_not_served"
        long = http.post("/v1/plugins/sp/" + "a." * 200 + "b", json={})
        assert long.status_code == 400
        assert long.json()["error"]["code"] == "invalid_method"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"Model": ', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"host_callback_id": "7"}', "host_callback_id"),
        (b'{"stream_id": "1"}', "stream_id"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused_with_400(
    gateway: ServerFactory, content: bytes, problem: str
) -> None:
    with (
        gateway([KEY], plugins=("simple-c",)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY)) as http,
    ):
        answer = http.post("/v1/plugins/simple-c/executor.execute", content=content)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_json"
        assert problem in answer.json()["error"]["message"]


def test_a_body_over_the_cap_is_refused_413_in_the_gateway_shape(gateway: ServerFactory) -> None:
    with (
        gateway([KEY], plugins=("simple-c",)) as server,
        httpx.Client(base_url=server.base_url, headers=bearer(KEY)) as http,
    ):
        answer = http.post(
            "/v1/plugins/simple-c/executor.execute", content=b" " * (MAX_BODY_BYTES + 1)
        )
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "body_too_large"
        assert "the /v1 API takes at most" in answer.json()["error"]["message"]
        # The header cap answers in the same shape.
        many = {f"x-h{i}": "v" for i in range(120)}
        heads = http.post("/v1/plugins/simple-c/executor.execute", json={}, headers=many)
        assert heads.status_code == 431
        assert heads.json()["error"]["code"] == "headers_too_large"
