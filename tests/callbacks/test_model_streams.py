"""host.model.execute_stream, stream_read, stream_close: a Rust plugin reads another's stream."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host import PluginHost
from cliproxy_host.callbacks import HostCallbacks
from cliproxy_host.config import HostConfig
from cliproxy_host.errors import PluginTimeout
from tests.conftest import build_rust_plugin

from .conftest import MakeHost

MODES = pytest.mark.parametrize("isolated", [False, True], ids=["inprocess", "isolated"])
# The reader ("rs") serves any model; the streamer ("rs-inner") lists "inner-stream".
ENTRIES = {"rs-inner": {"serves": "inner-stream"}}


@pytest.fixture(scope="session")
def model_rust() -> Path:
    return build_rust_plugin("model-rust")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def stats(host: PluginHost) -> Mapping[str, Any]:
    result: Mapping[str, Any] = host.call("rs-inner", "stats", {})
    return result


def settled(host: PluginHost) -> Mapping[str, Any]:
    """The streamer's counters once none of its emitting threads runs."""
    wait_for(lambda: stats(host)["running"] == 0)
    return stats(host)


def run(host: PluginHost, settings: str) -> str:
    body = base64.b64encode(settings.encode()).decode()
    return host.execute({"model": "outer", "body": body}).body.decode()


@MODES
def test_a_rust_executor_reads_another_plugins_stream_to_its_end(
    make_host: MakeHost, model_rust: Path, isolated: bool
) -> None:
    host = make_host({"rs": model_rust, "rs-inner": model_rust}, isolated=isolated, entries=ENTRIES)
    assert run(host, "count=5") == "s0,s1,s2,s3,s4|done-after-close=true"
    assert settled(host) == {"emits_ok": 5, "emits_failed": 0, "running": 0}


@MODES
def test_closing_early_cancels_the_inner_executors_stream(
    make_host: MakeHost, model_rust: Path, isolated: bool
) -> None:
    callbacks = HostCallbacks(HostConfig().http)
    host = make_host(
        {"rs": model_rust, "rs-inner": model_rust},
        isolated=isolated,
        entries=ENTRIES,
        callbacks=callbacks,
    )
    try:
        # stream_read after stream_close answers done.
        assert run(host, "count=400;interval=5;reads=2") == "s0,s1|done-after-close=true"
        counters = settled(host)
        # The emitter was refused long before its 400 chunks (2 s at 5 ms each).
        assert counters["emits_failed"] == 1
        assert counters["emits_ok"] < 100
        assert len(callbacks.models) == 0
    finally:
        host.close()
        callbacks.close()


@MODES
def test_a_stream_left_open_ends_with_the_callers_request(
    make_host: MakeHost, model_rust: Path, isolated: bool
) -> None:
    callbacks = HostCallbacks(HostConfig().http)
    host = make_host(
        {"rs": model_rust, "rs-inner": model_rust},
        isolated=isolated,
        entries=ENTRIES,
        callbacks=callbacks,
    )
    try:
        assert run(host, "count=400;interval=5;reads=1;close=0") == "s0|done-after-close=open"
        # The executor.execute scope of "rs" ended: its cleanup closed the run.
        assert len(callbacks.models) == 0
        counters = settled(host)
        assert counters["emits_failed"] == 1
        assert counters["emits_ok"] < 100
    finally:
        host.close()
        callbacks.close()


@MODES
def test_a_read_waits_at_most_half_the_readers_timeout(
    make_host: MakeHost, model_rust: Path, isolated: bool
) -> None:
    entries = {**ENTRIES, "rs": {"timeout_ms": 1000}}
    host = make_host({"rs": model_rust, "rs-inner": model_rust}, isolated=isolated, entries=entries)
    started = time.monotonic()
    with pytest.raises(PluginTimeout, match=r"host\.model\.stream_read: no chunk of model "):
        run(host, "count=3;interval=3000")
    assert time.monotonic() - started < 5
    # The run was closed: the streamer's next emit, 3 s on, is refused.
    assert settled(host)["emits_failed"] == 1
    assert run(host, "count=2") == "s0,s1|done-after-close=true"


def test_a_stream_id_belongs_to_the_plugin_that_opened_it(
    make_host: MakeHost, model_rust: Path
) -> None:
    callbacks = HostCallbacks(HostConfig().http)
    host = make_host(
        {"rs": model_rust, "rs-inner": model_rust}, entries=ENTRIES, callbacks=callbacks
    )
    try:
        scope = host.scopes.open("rs", "executor.execute")
        opened = callbacks(
            "rs",
            "host.model.execute_stream",
            b'{"model":"inner-stream","stream":true,"body":"Y291bnQ9Mw==",'
            b'"host_callback_id":"' + scope.callback_id.encode() + b'"}',
        )
        stream_id = opened.split(b'"stream_id":"')[1].split(b'"')[0]
        read = b'{"stream_id":"' + stream_id + b'"}'
        # Another plugin cannot read or close it: to it the ID is unknown.
        assert b'"done":true' in callbacks("rs-inner", "host.model.stream_read", read)
        callbacks("rs-inner", "host.model.stream_close", read)
        assert b'"done":false' in callbacks("rs", "host.model.stream_read", read)
        host.scopes.end(scope.callback_id)
        assert len(callbacks.models) == 0
        assert b'"done":true' in callbacks("rs", "host.model.stream_read", read)
        assert b'"done":true' in callbacks("rs", "host.model.stream_read", b'{"stream_id":"x"}')
    finally:
        host.close()
        callbacks.close()
