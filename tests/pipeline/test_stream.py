"""execute_stream: stream-chunk interceptors, the schema 3 rule, early stop, async."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Mapping
from typing import Any

from cliproxy_host.host.pipeline_source import HostSource
from cliproxy_host.pipeline import ModelRequest, Pipeline
from cliproxy_host.pipeline.source import PluginStream, StreamChunk

from .conftest import EXECUTOR, CallLog, MakeHost, StagePlugin

CHUNKS = '"response_stream_interceptor":true'
OBSERVER = '"request_lifecycle_plugin":true,"usage_plugin":true'


def test_chunks_chain_through_interceptors_and_drops_are_skipped(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host(
        {
            "c1": (stage("c1", CHUNKS, PP_DROP_INDEX=1), 20),
            "c2": (stage("c2", CHUNKS), 10),
            "ex": (stage("ex", EXECUTOR), 0),
            "lc": (stage("lc", OBSERVER), 0),
        }
    )
    chunks = list(host.execute_stream(ModelRequest(model="m", body=b"s", stream=True)))
    assert [c.payload for c in chunks] == [
        b"s|ex:c0|c1:chunk|c2:chunk",
        b"|ex:c2|c1:chunk|c2:chunk",
    ]
    assert [c.index for c in chunks] == [0, 1]
    # the chunk c1 dropped never reached c2; the header-init call comes first
    assert [
        (c["plugin"], c["request"]["ChunkIndex"])
        for c in call_log.calls("response.intercept_stream_chunk")
    ] == [("c1", -1), ("c2", -1), ("c1", 0), ("c2", 0), ("c1", 1), ("c1", 2), ("c2", 2)]
    assert call_log.order("request.complete", "usage.handle") == [
        "lc:request.complete",
        "lc:usage.handle",
    ]
    assert call_log.calls("request.complete")[0]["request"]["Outcome"] == "succeeded"


def test_schema_3_payload_chunks_omit_request_bodies_older_plugins_get_them(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host(
        {
            "new": (stage("new", CHUNKS, PP_SCHEMA=3), 20),
            "old": (stage("old", CHUNKS, PP_SCHEMA=2), 10),
            "ex": (stage("ex", EXECUTOR), 0),
        }
    )
    list(host.execute_stream(ModelRequest(model="m", body=b"s", stream=True)))
    calls = call_log.calls("response.intercept_stream_chunk")
    for call in calls:
        req = call["request"]
        carries = "OriginalRequest" in req and "RequestBody" in req
        expected = req["ChunkIndex"] == -1 or call["plugin"] == "old"
        assert carries is expected, call
    assert {c["plugin"] for c in calls if c["request"]["ChunkIndex"] >= 0} == {"new", "old"}


class _Spy:
    """The host as a PluginSource, remembering the streams it opened."""

    def __init__(self, inner: HostSource) -> None:
        self.inner = inner
        self.streams: list[_Tracked] = []

    def revision(self) -> object:
        return self.inner.revision()

    def participants(self, method: str) -> Any:
        return self.inner.participants(method)

    def call(self, plugin_id: str, method: str, request: Mapping[str, Any]) -> Any:
        return self.inner.call(plugin_id, method, request)

    def call_stream(
        self, plugin_id: str, method: str, request: Mapping[str, Any], *, callback_id: Any = None
    ) -> Any:
        stream = _Tracked(
            self.inner.call_stream(plugin_id, method, request, callback_id=callback_id)
        )
        self.streams.append(stream)
        return stream


class _Tracked:
    """A host PluginStream that remembers whether the pipeline closed it."""

    def __init__(self, inner: PluginStream) -> None:
        self.inner = inner
        self.headers = inner.headers
        self.chunks = iter(inner)
        self.closed = False

    def __iter__(self) -> _Tracked:
        return self

    def __next__(self) -> StreamChunk:
        return next(self.chunks)

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self.inner.__aiter__()

    def close(self) -> None:
        self.closed = True
        self.inner.close()

    def __enter__(self) -> _Tracked:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_consumer_stopping_early_closes_the_stream_and_reports_canceled(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host({"ex": (stage("ex", EXECUTOR), 0), "lc": (stage("lc", OBSERVER), 0)})
    spy = _Spy(
        HostSource(
            lambda: host._snapshot,
            host._natives,
            host.call,
            host.call_stream,
        )
    )
    chunks = Pipeline(spy).execute_stream(ModelRequest(model="m", body=b"s", stream=True))
    first = next(chunks)
    assert first.payload == b"s|ex:c0"
    assert not spy.streams[0].closed
    chunks.close()
    assert spy.streams[0].closed
    done = call_log.calls("request.complete")
    assert [d["request"]["Outcome"] for d in done] == ["canceled"]
    assert call_log.calls("usage.handle")[0]["request"]["Failed"] is True


def test_async_stream_yields_the_same_chunks(stage: StagePlugin, make_host: MakeHost) -> None:
    host = make_host({"ex": (stage("ex", EXECUTOR), 0)})

    async def collect() -> list[bytes]:
        return [
            c.payload
            async for c in host.aexecute_stream(ModelRequest(model="m", body=b"s", stream=True))
        ]

    assert asyncio.run(asyncio.wait_for(collect(), 30)) == [b"s|ex:c0", b"|ex:c1", b"|ex:c2"]


def test_stream_closed_before_reading_starts_nothing(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host({"ex": (stage("ex", EXECUTOR), 0), "lc": (stage("lc", OBSERVER), 0)})
    chunks = host.execute_stream(ModelRequest(model="m", body=b"s", stream=True))
    assert isinstance(chunks, Generator)
    chunks.close()
    assert call_log.calls("executor.execute_stream") == []
    assert call_log.calls("request.complete") == []
