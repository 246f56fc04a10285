"""Open streams per client key: /v1 plugin streams and model streams share one count."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from .errors import GatewayError
from .keys import ClientKey

__all__ = ["MAX_STREAMS_PER_KEY", "Release", "StreamSlots"]

# Open streams one client key may hold: each holds a plugin stream and its threads.
MAX_STREAMS_PER_KEY: Final = 64


class Release:
    """Gives a stream slot back once: on leaving `held` unless the SSE body took it over."""

    def __init__(self, free: Callable[[], None]) -> None:
        self._free: Callable[[], None] | None = free

    def take(self) -> Callable[[], None]:
        free, self._free = self._free, None
        assert free is not None
        return free

    def __call__(self) -> None:
        free, self._free = self._free, None
        if free is not None:
            free()


class StreamSlots:
    """Open streams per client key, at most MAX_STREAMS_PER_KEY each (one event loop: no lock)."""

    def __init__(self) -> None:
        self._open: dict[ClientKey, int] = {}

    @contextmanager
    def held(self, key: ClientKey) -> Iterator[Release]:
        count = self._open.get(key, 0)
        if count >= MAX_STREAMS_PER_KEY:
            raise GatewayError(
                429,
                "too_many_streams",
                f"client key {key.index} of api-keys has {count} streams open, the most one "
                "key may hold; close one, or give each client a key of its own",
                retryable=True,
            )
        self._open[key] = count + 1

        def free() -> None:
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]

        release = Release(free)
        try:
            yield release
        finally:
            release()
