"""The event bus: host.event.publish/subscribe/unsubscribe, `event.handle` deliveries, and
the application's `host.events` (publish, subscribe, unsubscribe)."""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..errors import InvalidRequest, PluginError
from .permissions import Permissions

__all__ = ["QUEUE_SIZE", "Event", "EventBus", "SubscriberStats"]

log = logging.getLogger(__name__)

# Events one subscriber may have waiting. Overflow policy: an event that finds the queue
# full is dropped for that subscriber alone and counted (`dropped`); the publisher never
# waits, so a slow subscriber cannot stall a plugin call or the other subscribers.
QUEUE_SIZE: Final = 1024
MAX_TOPIC_CHARS: Final = 256
# Topics whose subscriber lists are kept; past this the cache starts over.
_ROUTE_CACHE: Final = 4096
# The owner of the application's subscriptions (":" is never part of a plugin ID).
_PYTHON: Final = "python:"

# Delivers one event to a plugin: (plugin ID, the event.handle request); raises on failure.
Deliver = Callable[[str, dict[str, Any]], object]


@dataclass(frozen=True, slots=True)
class Event:
    """One published event as subscribers get it."""

    topic: str
    data: Any
    publisher: str  # the plugin ID, or "" for the application


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    """One subscriber's queue and counters (for listings and metrics)."""

    owner: str
    queued: int
    delivered: int
    dropped: int
    failed: int


@dataclass(frozen=True, slots=True)
class _Subscription:
    id: str
    owner: str
    pattern: str
    once: bool
    registered: bool  # declared at registration (Subscriptions), not by a callback


class _Stop:
    """The item that ends a subscriber's thread."""


_STOP: Final = _Stop()
_Item = tuple[Event, tuple[str, ...]] | _Stop
Handle = Callable[[Event, tuple[str, ...]], object]


class _Subscriber:
    """One subscriber's bounded queue and the daemon thread that delivers from it, in order."""

    def __init__(self, owner: str, handle: Handle, size: int) -> None:
        self.owner = owner
        self.queue: queue.Queue[_Item] = queue.Queue(size)
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self._handle = handle
        self._stopped = False
        threading.Thread(target=self._run, name=f"events to {owner}", daemon=True).start()

    def offer(self, event: Event, ids: tuple[str, ...]) -> bool:
        try:
            self.queue.put_nowait((event, ids))
            return True
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "events: subscriber %s has %d events waiting, the most it may; dropped"
                    " %d so far (latest: %s)",
                    self.owner,
                    self.queue.maxsize,
                    self.dropped,
                    event.topic,
                )
            return False

    def stop(self) -> None:
        self._stopped = True
        # A full queue is drained first, unless the flag is seen between two items.
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_STOP)

    def _run(self) -> None:
        while not self._stopped:
            item = self.queue.get()
            if isinstance(item, _Stop):
                return
            try:
                self._handle(*item)
                self.delivered += 1
            except Exception as exc:  # a failing subscriber is counted, never stops the bus
                self.failed += 1
                if self.failed & (self.failed - 1) == 0:  # the 1st, 2nd, 4th ... failure
                    log.warning(
                        "events: subscriber %s failed on %s (%d failures so far): %s",
                        self.owner,
                        item[0].topic,
                        self.failed,
                        exc,
                    )

    def stats(self) -> SubscriberStats:
        return SubscriberStats(
            self.owner, self.queue.qsize(), self.delivered, self.dropped, self.failed
        )


# Per subscriber of a topic: its queue and the IDs of its subscriptions that match.
_Route = tuple[tuple[_Subscriber, tuple[str, ...]], ...]


class EventBus:
    """Topics and subscriptions (fnmatch globs such as "order.*"). Thread-safe.

    A publish finds the subscribers of its topic (cached per topic until a subscription
    changes) and queues the event once per subscriber, with the IDs of its subscriptions
    that matched. Each subscriber's thread delivers: a plugin's as its method
    `event.handle`, the application's by calling its function.
    """

    def __init__(self, permissions: Permissions | None = None, queue_size: int = QUEUE_SIZE):
        self._permissions = permissions
        self._queue_size = queue_size
        self._deliver: Deliver | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._subscriptions: dict[str, _Subscription] = {}
        self._subscribers: dict[str, _Subscriber] = {}
        self._routes: dict[str, _Route] = {}
        self._closed = False

    def attach(self, deliver: Deliver) -> None:
        """Deliver plugins' events with `deliver` (the host calls `event.handle`)."""
        self._deliver = deliver

    # -- the application's API ---------------------------------------------------------

    def publish(self, topic: str, data: Any = None, *, publisher: str = "") -> int:
        """Queue `data` for every subscriber of `topic`; answers how many took it."""
        _check_topic(topic, "topic", "host.events.publish")
        return self._publish(Event(topic, data, publisher))[0]

    def subscribe(
        self, pattern: str, fn: Callable[[str, Any], object], *, once: bool = False
    ) -> str:
        """Call `fn(topic, data)` (on a thread of its own) for each event matching `pattern`;
        answers the subscription ID. `once` ends it after its first event."""
        _check_topic(pattern, "pattern", "host.events.subscribe")
        owner = f"{_PYTHON}{getattr(fn, '__qualname__', 'fn')}#{next(self._ids)}"

        def handle(event: Event, _ids: tuple[str, ...]) -> object:
            return fn(event.topic, event.data)

        return self._add(owner, pattern, once=once, registered=False, handle=handle)

    def unsubscribe(self, subscription_id: str) -> bool:
        """End a subscription; answers whether it was open."""
        return self._remove(subscription_id, owner=None)

    # -- the callbacks ---------------------------------------------------------------

    def publish_cb(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.event.publish {"topic", "data"} -> {"queued", "dropped"}."""
        topic = _check_topic(request.get("topic"), "topic", "host.event.publish")
        if self._permissions is not None:
            self._permissions.check_topic(plugin_id, "publish", topic)
        queued, dropped = self._publish(Event(topic, request.get("data"), plugin_id))
        return {"queued": queued, "dropped": dropped}

    def subscribe_cb(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.event.subscribe {"pattern", "once"} -> {"subscription_id"}."""
        pattern = _check_topic(request.get("pattern"), "pattern", "host.event.subscribe")
        once = request.get("once", False)
        if not isinstance(once, bool):
            raise _invalid(f'host.event.subscribe: "once" must be a boolean, got {once!r}')
        if self._permissions is not None:
            self._permissions.check_topic(plugin_id, "subscribe", pattern)
        sub_id = self._add(plugin_id, pattern, once=once, registered=False, handle=None)
        return {"subscription_id": sub_id}

    def unsubscribe_cb(self, plugin_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """host.event.unsubscribe {"subscription_id"} -> {"removed"}; another plugin's
        subscription is as unknown to it as a made-up ID."""
        sub_id = request.get("subscription_id")
        if not isinstance(sub_id, str):
            raise _invalid('host.event.unsubscribe: "subscription_id" (a string) is required')
        return {"removed": self._remove(sub_id, owner=plugin_id)}

    # -- the host's side ---------------------------------------------------------------

    def sync(self, registered: Mapping[str, tuple[str, ...]]) -> None:
        """The loaded plugins and the Subscriptions they registered: replaces the registered
        subscriptions, and ends every subscription of a plugin that is gone."""
        with self._lock:
            # A registered subscription that is still registered and allowed keeps its ID.
            kept: set[tuple[str, str]] = set()
            for sub in list(self._subscriptions.values()):
                if sub.owner.startswith(_PYTHON):
                    continue
                gone = sub.owner not in registered
                if not gone and sub.registered:
                    gone = (
                        sub.pattern not in registered[sub.owner]
                        or self._refusal(sub.owner, sub.pattern) is not None
                    )
                if gone:
                    del self._subscriptions[sub.id]
                elif sub.registered:
                    kept.add((sub.owner, sub.pattern))
            for plugin_id, patterns in registered.items():
                for pattern in dict.fromkeys(patterns):
                    if (plugin_id, pattern) not in kept and self._allowed_at_registration(
                        plugin_id, pattern
                    ):
                        self._add_locked(plugin_id, pattern, False, True, None)
            self._prune_locked()

    def stats(self) -> list[SubscriberStats]:
        """Every subscriber's queue depth and counters."""
        with self._lock:
            subscribers = list(self._subscribers.values())
        return [s.stats() for s in subscribers]

    def subscriptions(self, owner: str) -> list[str]:
        """The patterns a plugin (or application owner) is subscribed to."""
        with self._lock:
            return [s.pattern for s in self._subscriptions.values() if s.owner == owner]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._subscriptions.clear()
            self._prune_locked()

    # -- inside ----------------------------------------------------------------------

    def _refusal(self, plugin_id: str, pattern: str) -> PluginError | None:
        """Why the plugin may not hold a subscription to `pattern`; None if it may."""
        try:
            _check_topic(pattern, "pattern", "Subscriptions")
            if self._permissions is not None:
                self._permissions.check(plugin_id, "host.event.subscribe", {})
                self._permissions.check_topic(plugin_id, "subscribe", pattern)
        except PluginError as exc:
            return exc
        return None

    def _allowed_at_registration(self, plugin_id: str, pattern: str) -> bool:
        problem = self._refusal(plugin_id, pattern)
        if problem is not None:
            log.warning(
                "plugin %s: registered subscription %r ignored: %s", plugin_id, pattern, problem
            )
        return problem is None

    def _publish(self, event: Event) -> tuple[int, int]:
        # A route with a one-shot subscription is never cached: it changes as it is used.
        route = self._routes.get(event.topic)
        retiring: list[_Subscriber] = []
        if route is None:
            route, retiring = self._route(event.topic)
        queued = dropped = 0
        for subscriber, ids in route:
            if subscriber.offer(event, ids):
                queued += 1
            else:
                dropped += 1
        for subscriber in retiring:
            subscriber.stop()  # after its last event, which it still delivers
        return queued, dropped

    def _route(self, topic: str) -> tuple[_Route, list[_Subscriber]]:
        """The subscribers of `topic`, and those whose one-shot subscription this event
        ends (their last); one-shot subscriptions are taken out. Under the lock."""
        with self._lock:
            by_owner: dict[str, list[_Subscription]] = {}
            for sub in self._subscriptions.values():
                if fnmatch.fnmatchcase(topic, sub.pattern):
                    by_owner.setdefault(sub.owner, []).append(sub)
            route = tuple(
                (self._subscribers[owner], tuple(sub.id for sub in subs))
                for owner, subs in by_owner.items()
                if owner in self._subscribers
            )
            once = [sub for subs in by_owner.values() for sub in subs if sub.once]
            if not once:
                if len(self._routes) >= _ROUTE_CACHE:
                    self._routes = {}
                self._routes[topic] = route
                return route, []
            for sub in once:
                del self._subscriptions[sub.id]
            self._routes = {}
            remaining = {sub.owner for sub in self._subscriptions.values()}
            retiring = [
                self._subscribers.pop(owner)
                for owner in by_owner
                if owner not in remaining and owner in self._subscribers
            ]
            return route, retiring

    def _add(
        self, owner: str, pattern: str, *, once: bool, registered: bool, handle: Handle | None
    ) -> str:
        with self._lock:
            return self._add_locked(owner, pattern, once, registered, handle)

    def _add_locked(
        self, owner: str, pattern: str, once: bool, registered: bool, handle: Handle | None
    ) -> str:
        if self._closed:
            raise PluginError("the event bus is closed (the host is shutting down)")
        sub = _Subscription(str(next(self._ids)), owner, pattern, once, registered)
        self._subscriptions[sub.id] = sub
        if owner not in self._subscribers:
            self._subscribers[owner] = _Subscriber(
                owner, handle or self._plugin_handle(owner), self._queue_size
            )
        self._routes = {}
        return sub.id

    def _plugin_handle(self, plugin_id: str) -> Handle:
        def handle(event: Event, ids: tuple[str, ...]) -> object:
            deliver = self._deliver
            if deliver is None:
                raise PluginError("no host delivers plugin events")
            request = {
                "topic": event.topic,
                "data": event.data,
                "publisher": event.publisher,
                "subscription_ids": list(ids),
            }
            return deliver(plugin_id, request)

        return handle

    def _remove(self, sub_id: str, *, owner: str | None) -> bool:
        with self._lock:
            sub = self._subscriptions.get(sub_id)
            if sub is None or (owner is not None and sub.owner != owner):
                return False
            del self._subscriptions[sub_id]
            self._prune_locked()
            return True

    def _prune_locked(self) -> None:
        """Stop the threads of owners left without subscriptions; forget cached routes."""
        owners = {sub.owner for sub in self._subscriptions.values()}
        for owner in [o for o in self._subscribers if o not in owners]:
            self._subscribers.pop(owner).stop()
        self._routes = {}


def _check_topic(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TOPIC_CHARS:
        raise _invalid(
            f'{where}: "{field}" must be a non-empty string of at most {MAX_TOPIC_CHARS}'
            f" characters (e.g. order.created, or a glob such as order.*), got {value!r:.80}"
        )
    return value


def _invalid(message: str) -> PluginError:
    return InvalidRequest(message, retryable=False, http_status=400)
