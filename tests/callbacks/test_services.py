"""The service registry: `Services` at registration, host.service.lookup in priority order."""

from __future__ import annotations

from pathlib import Path

import pytest

from cliproxy_host.errors import InvalidRegistration, InvalidRequest
from cliproxy_host.host.registry import parse_registration
from tests.callbacks.conftest import BusHost, BusLib, relay

LOOKUP = {"permissions": {"callbacks": ["host.service.lookup"]}}


def test_lookup_answers_the_providers_in_priority_order(
    bus_c: BusLib, bus_rust: Path, bus_host: BusHost
) -> None:
    host = bus_host(
        {
            "asker": bus_c("asker"),
            "low": bus_c("low", services=[("kv", "1"), ("queue", "3")]),
            "high": bus_c("high", services=[("kv", "1")]),
            "rs": bus_rust,  # registers kv 2
        },
        entries={"asker": LOOKUP, "low": {"priority": 1}, "high": {"priority": 7}},
    )
    providers = relay(host, "asker", "host.service.lookup", {"name": "kv"})["providers"]
    assert [(p["plugin"], p["version"], p["priority"]) for p in providers] == [
        ("high", "1", 7),
        ("low", "1", 1),
        ("rs", "2", 0),
    ]
    only_v2 = relay(host, "asker", "host.service.lookup", {"name": "kv", "version": "2"})
    assert [p["plugin"] for p in only_v2["providers"]] == ["rs"]
    assert relay(host, "asker", "host.service.lookup", {"name": "none"}) == {"providers": []}
    # Unloading a provider takes it out of the registry.
    host.unload("high")
    providers = relay(host, "asker", "host.service.lookup", {"name": "kv"})["providers"]
    assert [p["plugin"] for p in providers] == ["low", "rs"]


def test_lookup_needs_a_name(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host({"asker": bus_c("asker")}, entries={"asker": LOOKUP})
    with pytest.raises(InvalidRequest, match='"name"'):
        relay(host, "asker", "host.service.lookup", {})


def test_a_service_without_a_name_is_an_invalid_registration() -> None:
    result = {
        "metadata": {"Name": "x", "Version": "1", "Author": "a", "GitHubRepository": "g"},
        "capabilities": {"usage_plugin": True},
        "Services": [{"Version": "1"}],
    }
    with pytest.raises(InvalidRegistration, match="services"):
        parse_registration(result, "x")
