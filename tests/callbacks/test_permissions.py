"""Permissions per plugin: the Go host's callbacks by default, this project's own denied
until granted, `strict`, narrowing, the key a denial names, and the credentials warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host.callbacks.permissions import GO_CALLBACKS, OWN_CALLBACKS, Permissions
from cliproxy_host.config import HostConfig
from cliproxy_host.errors import PermissionDenied
from tests.callbacks.conftest import BusHost, BusLib, relay, wait_for

LOG = {"level": "info", "message": "hello"}


def denied(host: Any, plugin_id: str, method: str, request: dict[str, Any], key: str) -> None:
    """`method` from `plugin_id` is refused with permission_denied naming `key`."""
    with pytest.raises(PermissionDenied) as info:
        relay(host, plugin_id, method, request)
    assert info.value.code == "permission_denied"
    assert f"plugins.configs.{plugin_id}.permissions.{key}" in info.value.message


def test_by_default_the_go_callbacks_work_and_the_new_ones_are_denied(
    bus_c: BusLib, bus_host: BusHost
) -> None:
    host = bus_host({"a": bus_c("a"), "b": bus_c("b")})
    assert relay(host, "a", "host.log", LOG) == {}
    assert relay(host, "a", "host.auth.list", {}) == {"files": []}
    denied(host, "a", "host.event.publish", {"topic": "t"}, "publish")
    denied(host, "a", "host.event.subscribe", {"pattern": "t"}, "subscribe")
    denied(host, "a", "host.event.unsubscribe", {"subscription_id": "1"}, "subscribe")
    denied(host, "a", "host.plugin.call", {"plugin": "b", "method": "relay.echo"}, "call")
    denied(host, "a", "host.dispatch", {"method": "usage.handle"}, "call")
    denied(host, "a", "host.service.lookup", {"name": "kv"}, "callbacks")


def test_strict_denies_every_callback_not_granted(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host(
        {"a": bus_c("a"), "b": bus_c("b")},
        entries={"b": {"permissions": {"callbacks": ["host.log"]}}},
        plugins={"default-permissions": "strict"},
    )
    denied(host, "a", "host.log", LOG, "callbacks")
    denied(host, "a", "host.auth.list", {}, "callbacks")
    assert relay(host, "b", "host.log", LOG) == {}
    denied(host, "b", "host.auth.list", {}, "callbacks")


def test_a_callbacks_entry_narrows_the_default(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host(
        {"a": bus_c("a")},
        entries={"a": {"permissions": {"callbacks": ["host.log", "host.service.*"]}}},
    )
    assert relay(host, "a", "host.log", LOG) == {}
    assert relay(host, "a", "host.service.lookup", {"name": "kv"}) == {"providers": []}
    denied(host, "a", "host.auth.list", {}, "callbacks")
    denied(host, "a", "host.http.do", {"url": "http://127.0.0.1:9/"}, "callbacks")


def test_a_plugin_without_a_grant_cannot_reach_what_it_was_not_given(
    bus_c: BusLib, bus_rust: Path, bus_host: BusHost
) -> None:
    host = bus_host(
        {"a": bus_c("a"), "b": bus_c("b"), "c": bus_c("c"), "rs": bus_rust},
        entries={
            "a": {"permissions": {"call": ["b"], "publish": ["order.*"], "subscribe": ["order.*"]}},
            # rs registers Subscriptions ["rust.*"] but is granted no subscription.
        },
    )
    assert relay(host, "a", "host.plugin.call", {"plugin": "b", "method": "relay.echo"})
    denied(host, "a", "host.plugin.call", {"plugin": "c", "method": "relay.echo"}, "call")
    denied(host, "a", "host.plugin.call", {"plugin": "rs", "method": "relay.echo"}, "call")
    # host.dispatch reaches b only (c and rs provide usage.handle too).
    answer = relay(host, "a", "host.dispatch", {"method": "usage.handle", "request": {}})
    assert [r["plugin"] for r in answer["result"]] == ["b"]
    assert relay(host, "a", "host.event.publish", {"topic": "order.x"}) == {
        "queued": 0,
        "dropped": 0,
    }
    denied(host, "a", "host.event.publish", {"topic": "user.x"}, "publish")
    denied(host, "a", "host.event.subscribe", {"pattern": "user.*"}, "subscribe")
    denied(host, "a", "host.event.subscribe", {"pattern": "*"}, "subscribe")
    # The registered subscription of rs was not taken: its events never reach it.
    assert host.events.subscriptions("rs") == []
    assert host.events.publish("rust.ping", 1) == 0
    assert host.call("rs", "relay.events", {}) == {"events": []}
    # The Rust plugin is refused as the C one is.
    denied(host, "rs", "host.service.lookup", {"name": "kv"}, "callbacks")


def test_allowed_hosts_narrow_host_http_for_one_plugin(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host(
        {"a": bus_c("a")}, entries={"a": {"permissions": {"allowed-hosts": ["api.example.com"]}}}
    )
    denied(host, "a", "host.http.do", {"url": "http://127.0.0.1:9/"}, "allowed-hosts")
    denied(host, "a", "host.http.do_stream", {"url": "http://localhost:9/x"}, "allowed-hosts")


def test_a_config_change_applies_new_grants(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host({"a": bus_c("a")})
    denied(host, "a", "host.service.lookup", {"name": "kv"}, "callbacks")
    entry = {"enabled": True, "permissions": {"callbacks": ["host.service.lookup"]}}
    config = HostConfig.from_mapping(
        {
            "plugins": {
                "enabled": True,
                "dir": str(host.config.plugins_dir()),
                "configs": {"a": entry},
            }
        }
    )
    host.apply(config)
    assert wait_for(lambda: host.registration("a"))
    assert relay(host, "a", "host.service.lookup", {"name": "kv"}) == {"providers": []}


def test_the_list_and_the_log_warn_about_plugins_that_may_read_credentials(
    bus_c: BusLib, bus_host: BusHost, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        host = bus_host(
            {"reader": bus_c("reader"), "quiet": bus_c("quiet"), "plain": bus_c("plain")},
            entries={
                # Permissions in use, the Go callbacks left as they are: may read them.
                "reader": {"permissions": {"publish": ["order.*"]}},
                "quiet": {"permissions": {"callbacks": ["host.log", "host.http.*"]}},
                # No entry under `standard`: the Go host's defaults, no warning.
            },
        )
    infos = {pid: host.plugin(pid) for pid in ("reader", "quiet", "plain")}
    warned = {
        pid: [w for w in info.warnings if "credentials" in w]
        for pid, info in infos.items()
        if info is not None
    }
    (warning,) = warned["reader"]
    assert "host.auth.get" in warning
    assert "plugins.configs.reader.permissions.callbacks" in warning
    assert warned["quiet"] == warned["plain"] == []
    logged = [r.getMessage() for r in caplog.records if "credentials" in r.getMessage()]
    assert [m.split()[1] for m in logged] == ["reader"]


def test_under_strict_a_plugin_granted_host_auth_is_warned_about(
    bus_c: BusLib, bus_host: BusHost
) -> None:
    host = bus_host(
        {"reader": bus_c("reader"), "plain": bus_c("plain")},
        entries={"reader": {"permissions": {"callbacks": ["host.auth.*"]}}},
        plugins={"default-permissions": "strict"},
    )
    reader, plain = host.plugin("reader"), host.plugin("plain")
    assert reader is not None
    assert plain is not None
    assert [w for w in reader.warnings if "credentials" in w]
    assert not [w for w in plain.warnings if "credentials" in w]


def test_an_allowed_callback_is_a_set_lookup_in_a_grant_cached_per_plugin() -> None:
    permissions = Permissions(HostConfig())
    permissions.check("p", "host.log", {})
    grant = permissions.grant("p")
    assert grant.callbacks == GO_CALLBACKS
    assert isinstance(grant.callbacks, frozenset)
    assert permissions.grant("p") is grant  # compiled once per config
    strict = HostConfig.from_mapping({"plugins": {"default-permissions": "strict"}})
    permissions.configure(strict)
    assert permissions.grant("p") is not grant
    assert permissions.grant("p").callbacks == frozenset()
    for method in OWN_CALLBACKS:
        with pytest.raises(PermissionDenied):
            permissions.check("p", method, {})


def test_the_permissions_key_is_validated() -> None:
    with pytest.raises(Exception, match="permissions"):
        HostConfig.from_mapping(
            {"plugins": {"configs": {"p": {"permissions": {"callback": ["host.log"]}}}}}
        )
    with pytest.raises(Exception, match="default-permissions"):
        HostConfig.from_mapping({"plugins": {"default-permissions": "lax"}})
