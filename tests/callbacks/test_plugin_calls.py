"""host.plugin.call and host.dispatch between real C and Rust plugins: results, the depth
limit, cycles traced through host_callback_id (in-process and isolated), timeouts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host.errors import (
    InvalidRequest,
    PluginCallCycle,
    PluginCallTooDeep,
    PluginTimeout,
)
from tests.callbacks.conftest import BusHost, BusLib, relay


def calls(*targets: str) -> dict[str, Any]:
    return {"permissions": {"call": list(targets)}}


def nested(*hops: str, last: str = "relay.echo") -> dict[str, Any]:
    """A relay.host request that has hops[0] call hops[1] ... call `last` on the final hop."""
    request: dict[str, Any] = {"plugin": hops[-1], "method": last, "request": {"n": 1}}
    for hop in reversed(hops[1:-1]):
        request = {
            "plugin": hop,
            "method": "relay.host",
            "request": {"method": "host.plugin.call", "request": request},
        }
    return request


def test_a_plugin_calls_another_and_gets_its_result(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host({"a": bus_c("a"), "b": bus_c("b")}, entries={"a": calls("b")})
    answer = relay(
        host, "a", "host.plugin.call", {"plugin": "b", "method": "relay.echo", "request": {"x": 1}}
    )
    result = answer["result"]
    assert result["plugin"] == "b"
    # The callee's request carries a host_callback_id: the scope its own calls echo.
    assert result["request"]["x"] == 1
    assert result["request"]["host_callback_id"]


def test_a_c_plugin_calls_the_rust_plugin(bus_c: BusLib, bus_rust: Path, bus_host: BusHost) -> None:
    host = bus_host({"a": bus_c("a"), "rs": bus_rust}, entries={"a": calls("rs")})
    answer = relay(host, "a", "host.plugin.call", nested("a", "rs"))
    assert answer["result"]["plugin"] == "bus-rust"


@pytest.mark.parametrize("isolated", [False, True], ids=["inprocess", "isolated"])
def test_a_call_back_into_a_plugin_on_the_chain_is_a_cycle(
    bus_c: BusLib, bus_host: BusHost, isolated: bool
) -> None:
    # a -> b -> a: b's call echoes the host_callback_id of its own request, which names
    # the chain (a) it runs for, from b's thread in its own process when isolated.
    host = bus_host(
        {"a": bus_c("a"), "b": bus_c("b")},
        entries={"a": calls("a", "b"), "b": calls("a")},
        isolated={"a", "b"} if isolated else set(),
    )
    with pytest.raises(PluginCallCycle, match="a -> b -> a") as info:
        relay(host, "a", "host.plugin.call", nested("a", "b", "a"))
    assert info.value.code == "plugin_call_cycle"
    # A plugin calling itself is the shortest cycle.
    with pytest.raises(PluginCallCycle):
        relay(host, "a", "host.plugin.call", {"plugin": "a", "method": "relay.echo"})


def test_the_depth_limit_counts_the_plugins_on_the_chain(bus_c: BusLib, bus_host: BusHost) -> None:
    libs = {pid: bus_c(pid) for pid in ("a", "b", "c", "d")}
    entries = {"a": calls("b"), "b": calls("c"), "c": calls("d")}
    host = bus_host(libs, entries=entries, plugins={"plugin-call-depth": 2})
    # a -> b -> c: the call to c runs for (a, b), two deep: allowed.
    assert relay(host, "a", "host.plugin.call", nested("a", "b", "c"))["result"]
    # a -> b -> c -> d: the call to d runs for (a, b, c), over 2.
    with pytest.raises(PluginCallTooDeep, match=r"plugins\.plugin-call-depth \(2\)") as info:
        relay(host, "a", "host.plugin.call", nested("a", "b", "c", "d"))
    assert "a -> b -> c" in info.value.message


def test_a_call_is_timed_by_its_timeout_ms(bus_c: BusLib, bus_host: BusHost) -> None:
    slow = bus_c("slow", BP_EVENT_SLEEP_MS=1500)
    host = bus_host({"a": bus_c("a"), "slow": slow}, entries={"a": calls("slow")})
    request = {"plugin": "slow", "method": "event.handle", "request": {}, "timeout_ms": 200}
    started = time.monotonic()
    with pytest.raises(PluginTimeout, match=r"within 0\.2 s"):
        relay(host, "a", "host.plugin.call", request)
    assert time.monotonic() - started < 1.2


def test_lifecycle_methods_cannot_be_called(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host({"a": bus_c("a"), "b": bus_c("b")}, entries={"a": calls("b")})
    with pytest.raises(InvalidRequest, match="lifecycle method"):
        relay(host, "a", "host.plugin.call", {"plugin": "b", "method": "plugin.shutdown"})
    assert host.call("b", "relay.echo", {})["plugin"] == "b"  # b still serves


def test_dispatch_runs_the_method_over_the_other_plugins_in_priority_order(
    bus_c: BusLib, bus_rust: Path, bus_host: BusHost
) -> None:
    host = bus_host(
        {"a": bus_c("a"), "b": bus_c("b"), "c": bus_c("c"), "rs": bus_rust},
        entries={
            "a": {"permissions": {"callbacks": ["host.dispatch"]}},
            "b": {"priority": 1},
            "c": {"priority": 9},
        },
    )
    answer = relay(host, "a", "host.dispatch", {"method": "usage.handle", "request": {}})
    # usage.handle is a broadcast: every provider but the caller, highest priority first.
    assert [r["plugin"] for r in answer["result"]] == ["c", "b", "rs"]
    assert answer["result"][2]["result"] == {"plugin": "bus-rust"}


def test_dispatch_reaches_only_the_plugins_in_the_call_permission(
    bus_c: BusLib, bus_host: BusHost
) -> None:
    host = bus_host(
        {"a": bus_c("a"), "b": bus_c("b"), "c": bus_c("c")},
        entries={"a": calls("c")},
    )
    answer = relay(host, "a", "host.dispatch", {"method": "usage.handle", "request": {}})
    assert [r["plugin"] for r in answer["result"]] == ["c"]
