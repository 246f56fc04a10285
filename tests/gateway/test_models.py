"""The model endpoints with clients nobody here wrote: the official `openai` package for
/v1/models and /v1/chat/completions, httpx for /v1/responses and /v1/messages, against
the C model executor tests/plugins/chatexec.c through the pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from ..httpserver import serve
from .conftest import KEY, OTHER_KEY, ServerFactory, bearer

PLUGINS = ("chat-c",)


def sse(lines: Iterator[str]) -> list[tuple[str, str]]:
    """(event name, raw data) of an SSE body; "message" when unnamed."""
    out: list[tuple[str, str]] = []
    name = "message"
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            out.append((name, line[len("data: ") :]))
            name = "message"
    return out


@pytest.fixture
def server(gateway: ServerFactory) -> Iterator[Any]:
    keys = [KEY, {"key": OTHER_KEY, "models": ["chat-c-2"]}]
    with gateway(keys, PLUGINS) as running:
        yield running


def client(server: Any, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=20)


def test_openai_lists_models(server: Any) -> None:
    models = client(server).models.list()
    assert sorted(m.id for m in models.data) == ["chat-c-1", "chat-c-2"]
    assert {m.owned_by for m in models.data} == {"chatexec"}
    # A key limited to some models sees only those.
    assert [m.id for m in client(server, OTHER_KEY).models.list().data] == ["chat-c-2"]


def test_openai_completion(server: Any) -> None:
    answer = client(server).chat.completions.create(
        model="chat-c-1", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.object == "chat.completion"
    text = answer.choices[0].message.content or ""
    assert text.startswith("hello from chatexec (chat-c-1, ")
    assert answer.usage is not None
    assert answer.usage.total_tokens == 2


def test_openai_streamed_completion(server: Any) -> None:
    stream = client(server).chat.completions.create(
        model="chat-c-1", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=5
    )
    parts = [chunk.choices[0].delta.content or "" for chunk in stream]
    assert "".join(parts) == "tok1 tok2 tok3 tok4 tok5 "
    # The SSE itself: data lines, then data: [DONE].
    with httpx.Client(base_url=server.base_url, headers=bearer(KEY), timeout=20) as http:
        body = {"model": "chat-c-1", "stream": True, "max_tokens": 2, "messages": []}
        with http.stream("POST", "/v1/chat/completions", json=body) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            events = sse(answer.iter_lines())
    assert [name for name, _ in events] == ["message"] * 4
    assert events[-1][1] == "[DONE]"
    assert orjson.loads(events[0][1])["object"] == "chat.completion.chunk"


def test_openai_errors(server: Any) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(server).chat.completions.create(model="no-such-model", messages=[])
    assert caught.value.status_code == 404
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found"
    assert error["type"] == "not_found_error"
    assert "no-such-model" in error["message"]
    with pytest.raises(openai.AuthenticationError):
        client(server, "wrong-key-000000000").models.list()
    # A key's `models` limit holds.
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client(server, OTHER_KEY).chat.completions.create(model="chat-c-1", messages=[])
    assert "models" in denied.value.message


def test_responses_with_httpx(server: Any) -> None:
    with httpx.Client(base_url=server.base_url, headers=bearer(KEY), timeout=20) as http:
        answer = http.post("/v1/responses", json={"model": "chat-c-2", "input": "hi"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["object"] == "response"
        assert body["output"][0]["content"][0]["text"].startswith("hello from chatexec (chat-c-2")
        request = {"model": "chat-c-2", "input": "hi", "stream": True, "max_tokens": 2}
        with http.stream("POST", "/v1/responses", json=request) as streamed:
            assert streamed.status_code == 200
            events = sse(streamed.iter_lines())
    names = [name for name, _ in events]
    assert names == ["response.output_text.delta"] * 2 + ["response.completed"]
    assert orjson.loads(events[1][1])["delta"] == "tok2 "


def test_messages_with_httpx(server: Any) -> None:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=20) as http:
        body = {
            "model": "chat-c-1",
            "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}],
        }
        answer = http.post("/v1/messages", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["type"] == "message"
        with http.stream("POST", "/v1/messages", json={**body, "stream": True}) as streamed:
            assert streamed.status_code == 200
            events = sse(streamed.iter_lines())
        assert [name for name, _ in events] == ["content_block_delta"] * 2 + ["message_stop"]
        # Anthropic's error shape, with the status of the error.
        missing = http.post("/v1/messages", json={**body, "model": "nope"})
        assert missing.status_code == 404
        error = missing.json()
        assert error["type"] == "error"
        assert error["error"]["type"] == "not_found_error"
        assert "nope" in error["error"]["message"]
        broken = http.post(
            "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert broken.status_code == 400
        assert broken.json()["error"]["type"] == "invalid_request_error"


def test_error_mid_stream_in_protocol_shape(server: Any) -> None:
    with httpx.Client(base_url=server.base_url, headers=bearer(KEY), timeout=20) as http:
        body = {"model": "chat-c-1", "stream": True, "max_tokens": 1, "emit_error": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as answer:
            events = sse(answer.iter_lines())
        assert events[-1][1] != "[DONE]"
        assert "emit_error" in orjson.loads(events[-1][1])["error"]["message"]
        with http.stream("POST", "/v1/messages", json={**body, "messages": []}) as answer:
            events = sse(answer.iter_lines())
        assert events[-1][0] == "error"
        assert orjson.loads(events[-1][1])["type"] == "error"


def test_rust_executor_streams_its_upstream(gateway: ServerFactory) -> None:
    """upstream-rust GETs a loopback fake upstream through host.http.do and streams its
    answer's lines as chat.completion.chunk events, read here by the openai client."""
    with serve() as upstream:
        entries = {"up-rust": {"upstream": upstream.url("/stream")}}
        policy = {"http": {"allowed-hosts": ["127.0.0.1"]}}
        with gateway([KEY], ("up-rust",), entries, policy) as server:
            openai_client = client(server)
            assert [m.id for m in openai_client.models.list().data] == ["rust-up-1"]
            stream = openai_client.chat.completions.create(
                model="rust-up-1", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            parts = [chunk.choices[0].delta.content or "" for chunk in stream]
            assert "".join(parts) == "chunk-0 chunk-1 chunk-2 "
            answer = openai_client.chat.completions.create(model="rust-up-1", messages=[])
            assert answer.choices[0].message.content == "chunk-0 chunk-1 chunk-2"
            stats = server.service.host.call("up-rust", "stats", {})
            assert stats["upstream_calls"] == 2
            assert stats["emits_failed"] == 0
        assert upstream.hits == ["/stream?count=3", "/stream?count=3"]


def test_a_key_limited_to_plugins_reaches_only_their_executors(gateway: ServerFactory) -> None:
    """A key's `plugins` list limits the model routes too: the models of other executors
    are not listed for it, and asking for one answers 404 naming the key's list."""
    keys = [KEY, {"key": OTHER_KEY, "plugins": ["chat-c"]}]
    # up-rust is never called here: its upstream is only needed for a completion.
    entries = {"up-rust": {"upstream": "http://127.0.0.1:9/never"}}
    with gateway(keys, ("chat-c", "up-rust"), entries) as server:
        everything = sorted(m.id for m in client(server).models.list().data)
        assert everything == ["chat-c-1", "chat-c-2", "rust-up-1"]
        limited = client(server, OTHER_KEY)
        assert sorted(m.id for m in limited.models.list().data) == ["chat-c-1", "chat-c-2"]
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError) as refused:
                limited.chat.completions.create(
                    model="rust-up-1", messages=[{"role": "user", "content": "hi"}], stream=stream
                )
            assert refused.value.code == "model_not_found"
            message = str(refused.value)
            assert "plugins chat-c" in message
            assert "api-keys" in message
        answer = limited.chat.completions.create(
            model="chat-c-1", messages=[{"role": "user", "content": "hi"}]
        )
        assert (answer.choices[0].message.content or "").startswith("hello from chatexec")
