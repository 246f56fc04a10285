"""The event bus: host.event.publish/subscribe/unsubscribe, event.handle deliveries off the
publisher's thread, bounded queues with their overflow policy, failing subscribers, and the
application's host.events, with real C and Rust plugins."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host import PluginHost
from cliproxy_host.callbacks.events import EventBus
from tests.callbacks.conftest import BusHost, BusLib, relay, wait_for

PUB = {"permissions": {"publish": ["order.*", "x.*"]}}
SUB = {"permissions": {"subscribe": ["order.*", "x.*"]}}


def events(host: PluginHost, plugin_id: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = host.call(plugin_id, "relay.events", {})["events"]
    return result


def test_a_plugin_publishes_and_a_registered_subscriber_gets_event_handle(
    bus_c: BusLib, bus_host: BusHost
) -> None:
    host = bus_host(
        {"pub": bus_c("pub"), "sub": bus_c("sub", subscriptions=["order.*"])},
        entries={"pub": PUB, "sub": SUB},
    )
    answer = relay(host, "pub", "host.event.publish", {"topic": "order.created", "data": {"n": 1}})
    assert answer == {"queued": 1, "dropped": 0}
    relay(host, "pub", "host.event.publish", {"topic": "x.created", "data": 2})  # no match
    got = wait_for(lambda: events(host, "sub"))
    assert [(e["topic"], e["data"], e["publisher"]) for e in got] == [
        ("order.created", {"n": 1}, "pub")
    ]
    assert len(got[0]["subscription_ids"]) == 1


def test_delivery_runs_off_the_publishers_thread(bus_c: BusLib, bus_host: BusHost) -> None:
    # The subscriber takes 400 ms per event; the publisher's call must not wait for it.
    slow = bus_c("slow", subscriptions=["order.*"], BP_EVENT_SLEEP_MS=400)
    host = bus_host({"pub": bus_c("pub"), "slow": slow}, entries={"pub": PUB, "slow": SUB})
    started = time.monotonic()
    for n in range(3):
        relay(host, "pub", "host.event.publish", {"topic": "order.n", "data": n})
    assert time.monotonic() - started < 0.3
    got = wait_for(lambda: len(events(host, "slow")) == 3 or None, timeout=5)
    assert got
    assert [e["data"] for e in events(host, "slow")] == [0, 1, 2]  # in order


def test_a_failing_subscriber_is_counted_and_the_others_still_get_every_event(
    bus_c: BusLib, bus_host: BusHost
) -> None:
    host = bus_host(
        {
            "bad": bus_c("bad", subscriptions=["order.*"], BP_FAIL_EVENTS=True),
            "good": bus_c("good", subscriptions=["order.*"]),
        },
        entries={"bad": SUB, "good": SUB},
    )
    for n in range(3):
        assert host.events.publish("order.n", n) == 2
    assert wait_for(lambda: len(events(host, "good")) == 3 or None)
    stats = wait_for(
        lambda: (
            {s.owner: s for s in host.events.stats() if s.failed + s.delivered == 3}
            if all(s.failed + s.delivered == 3 for s in host.events.stats())
            else None
        )
    )
    assert stats["bad"].failed == 3
    assert stats["bad"].delivered == 0
    assert stats["good"].failed == 0
    assert stats["good"].delivered == 3


def test_run_time_subscriptions_one_shot_and_unsubscribe(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host({"sub": bus_c("sub")}, entries={"sub": SUB})
    once = relay(host, "sub", "host.event.subscribe", {"pattern": "x.*", "once": True})
    host.events.publish("x.first", 1)
    host.events.publish("x.second", 2)
    assert wait_for(lambda: events(host, "sub"))
    time.sleep(0.1)  # a second delivery, were there one, would be queued by now
    assert [e["topic"] for e in events(host, "sub")] == ["x.first"]
    assert events(host, "sub")[0]["subscription_ids"] == [once["subscription_id"]]

    sub = relay(host, "sub", "host.event.subscribe", {"pattern": "order.*"})["subscription_id"]
    host.events.publish("order.a", 1)
    assert wait_for(lambda: len(events(host, "sub")) == 2 or None)
    removed = relay(host, "sub", "host.event.unsubscribe", {"subscription_id": sub})
    assert removed == {"removed": True}
    assert host.events.publish("order.b", 2) == 0
    assert relay(host, "sub", "host.event.unsubscribe", {"subscription_id": sub}) == {
        "removed": False
    }


def test_a_plugin_cannot_unsubscribe_another_plugins_subscription(
    bus_c: BusLib, bus_host: BusHost
) -> None:
    host = bus_host({"a": bus_c("a"), "b": bus_c("b")}, entries={"a": SUB, "b": SUB})
    sub = relay(host, "a", "host.event.subscribe", {"pattern": "order.*"})["subscription_id"]
    assert relay(host, "b", "host.event.unsubscribe", {"subscription_id": sub}) == {
        "removed": False
    }
    assert host.events.subscriptions("a") == ["order.*"]


def test_the_python_api_publishes_to_plugins_and_subscribes_to_them(
    bus_c: BusLib, bus_host: BusHost
) -> None:
    host = bus_host(
        {"pub": bus_c("pub"), "sub": bus_c("sub", subscriptions=["order.*"])},
        entries={"pub": PUB, "sub": SUB},
    )
    seen: list[tuple[str, Any]] = []
    threads: set[int] = set()

    def on_event(topic: str, data: Any) -> None:
        threads.add(threading.get_ident())
        seen.append((topic, data))

    sub_id = host.events.subscribe("order.*", on_event)
    relay(host, "pub", "host.event.publish", {"topic": "order.paid", "data": [1, 2]})
    assert host.events.publish("order.shipped", "yes") == 2  # the plugin and on_event
    assert wait_for(lambda: len(seen) == 2 or None)
    assert seen == [("order.paid", [1, 2]), ("order.shipped", "yes")]
    assert threading.get_ident() not in threads
    assert host.events.unsubscribe(sub_id) is True
    assert host.events.publish("order.more", 3) == 1


def test_the_rust_plugin_gets_its_registered_topics_and_publishes(
    bus_c: BusLib, bus_rust: Path, bus_host: BusHost
) -> None:
    host = bus_host(
        {"rs": bus_rust, "sub": bus_c("sub")},
        entries={"rs": {"permissions": {"subscribe": ["rust.*"], "publish": ["*"]}}, "sub": SUB},
    )
    assert host.events.subscriptions("rs") == ["rust.*"]
    relay(host, "sub", "host.event.subscribe", {"pattern": "x.*"})
    assert relay(host, "rs", "host.event.publish", {"topic": "x.from-rust", "data": 7}) == {
        "queued": 1,
        "dropped": 0,
    }
    host.events.publish("rust.ping", {"p": 1})
    got = wait_for(lambda: events(host, "rs"))
    assert [(e["topic"], e["data"]) for e in got] == [("rust.ping", {"p": 1})]
    got = wait_for(lambda: events(host, "sub"))
    assert [(e["topic"], e["publisher"]) for e in got] == [("x.from-rust", "rs")]


def test_isolated_plugins_publish_and_get_events(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host(
        {"pub": bus_c("pub"), "sub": bus_c("sub", subscriptions=["order.*"])},
        entries={"pub": PUB, "sub": SUB},
        isolated={"pub", "sub"},
    )
    relay(host, "pub", "host.event.publish", {"topic": "order.iso", "data": None})
    got = wait_for(lambda: events(host, "sub"))
    assert [(e["topic"], e["publisher"]) for e in got] == [("order.iso", "pub")]


def test_unloading_a_plugin_ends_its_subscriptions(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host({"sub": bus_c("sub", subscriptions=["order.*"])}, entries={"sub": SUB})
    relay(host, "sub", "host.event.subscribe", {"pattern": "x.*"})
    assert sorted(host.events.subscriptions("sub")) == ["order.*", "x.*"]
    host.unload("sub")
    assert host.events.subscriptions("sub") == []
    assert host.events.publish("order.a", 1) == 0


def has(items: list[Any], count: int) -> bool:
    return len(items) == count


# -- the queue's overflow policy (the bus alone, with a real subscriber thread) ------------


def test_a_full_queue_drops_new_events_for_that_subscriber_only() -> None:
    bus = EventBus(queue_size=2)
    release = threading.Event()
    slow: list[Any] = []
    fast: list[Any] = []

    def blocked(topic: str, data: Any) -> None:
        release.wait(5)
        slow.append(data)

    bus.subscribe("t", blocked)
    bus.subscribe("t", lambda topic, data: fast.append(data))
    try:
        # The slow subscriber's thread holds event 0; 1 and 2 fill its queue; 3-5 drop.
        bus.publish("t", 0)
        assert wait_for(lambda: [s for s in bus.stats() if s.queued == 0 and not s.delivered])
        results = []
        for n in range(1, 6):  # paced by the fast subscriber, whose queue never fills
            results.append(bus.publish("t", n))
            assert wait_for(partial(has, fast, n + 1))
        release.set()
        assert wait_for(lambda: len(slow) == 3 or None)
        assert slow == [0, 1, 2]
        assert fast == [0, 1, 2, 3, 4, 5]
        assert results == [2, 2, 1, 1, 1]
        dropped = sorted(s.dropped for s in bus.stats())
        assert dropped == [0, 3]
    finally:
        release.set()
        bus.close()


def test_a_topic_must_be_a_short_non_empty_string(bus_c: BusLib, bus_host: BusHost) -> None:
    host = bus_host({"pub": bus_c("pub")}, entries={"pub": {"permissions": {"publish": ["*"]}}})
    for bad in ("", 5, "x" * 300):
        with pytest.raises(Exception, match='"topic" must be a non-empty string') as info:
            relay(host, "pub", "host.event.publish", {"topic": bad})
        assert info.value.code == "invalid_request"  # type: ignore[attr-defined]


def test_a_one_shot_application_subscription_gets_one_event_then_its_thread_ends() -> None:
    bus = EventBus()
    got: list[Any] = []
    try:
        bus.subscribe("t.*", lambda topic, data: got.append(data), once=True)
        assert bus.publish("t.a", 1) == 1
        assert bus.publish("t.b", 2) == 0
        assert wait_for(lambda: got)
        assert got == [1]
        assert bus.stats() == []  # its subscriber (queue and thread) is gone
    finally:
        bus.close()
