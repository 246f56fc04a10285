"""Client keys (`api-keys:`): which key a request presents, whether it is one, what it may call."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.requests import Request

from ..config.schema import ClientKeyEntry, HostConfig
from ..web.keys import digest, match_index
from ..web.limiter import FailureLimiter
from .errors import GatewayError

__all__ = ["ClientAuth", "ClientKey", "ClientKeys", "presented_client_key"]

log = logging.getLogger(__name__)

_HOW_TO_ADD = (
    'add one to the config file, e.g. `api-keys: ["<a long random key>"]`, and send it as '
    "'Authorization: Bearer <key>' or 'x-api-key: <key>'"
)


@dataclass(frozen=True)
class ClientKey:
    """What one configured key may reach; it never holds the key itself. `index` is the
    key's place in `api-keys`, for messages."""

    index: int
    models: frozenset[str] | None = None
    plugins: frozenset[str] | None = None

    def allows_plugin(self, plugin_id: str) -> bool:
        return self.plugins is None or plugin_id in self.plugins

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models


class ClientKeys:
    """The configured client keys, as digests compared in constant time."""

    def __init__(self, entries: Sequence[ClientKeyEntry]) -> None:
        self._digests = [digest(entry.key) for entry in entries]
        self._keys = [
            ClientKey(
                index,
                None if entry.models is None else frozenset(entry.models),
                None if entry.plugins is None else frozenset(entry.plugins),
            )
            for index, entry in enumerate(entries)
        ]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:
        return f"ClientKeys({len(self._keys)})"  # never the keys

    def find(self, presented: str) -> ClientKey | None:
        index = match_index(digest(presented), self._digests)
        return None if index is None else self._keys[index]


def presented_client_key(headers: Headers) -> str | None:
    """The key from "Authorization: Bearer <key>", else from "x-api-key: <key>"."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key", "").strip() or None


class ClientAuth:
    """FastAPI dependency of every /v1 route: the client key, or an error answer.

    The keys are read from `config()` per request (rebuilt when the config object changes),
    so a reloaded config applies at once. Wrong keys count toward `limiter`, per address.
    """

    def __init__(
        self, config: Callable[[], HostConfig], limiter: FailureLimiter | None = None
    ) -> None:
        self._config = config
        self.limiter = limiter if limiter is not None else FailureLimiter()
        self._built: tuple[HostConfig, ClientKeys] | None = None

    def keys(self) -> ClientKeys:
        config = self._config()
        built = self._built
        if built is None or built[0] is not config:
            built = (config, ClientKeys(config.api_keys))
            self._built = built  # one reference swap: racing requests build the same
        return built[1]

    async def __call__(self, request: Request) -> ClientKey:
        client = request.client.host if request.client else "unknown"
        wait = self.limiter.check(client)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise GatewayError(
                429,
                "too_many_attempts",
                f"too many wrong client keys from this address; retry in {seconds} s",
                retryable=True,
                headers={"Retry-After": str(seconds)},
            )
        keys = self.keys()
        if not keys:
            raise GatewayError(
                401,
                "api_keys_not_set",
                f"no client keys are configured, so /v1 serves nobody; {_HOW_TO_ADD}",
                headers={"WWW-Authenticate": "Bearer"},
            )
        presented = presented_client_key(request.headers)
        if presented is None:
            raise GatewayError(
                401,
                "missing_api_key",
                "send a client key (api-keys in the config) as 'Authorization: Bearer <key>' "
                "or 'x-api-key: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = keys.find(presented)
        if key is None:
            lockout = self.limiter.failure(client)
            # The address only: a presented key, right or wrong, never goes to the log.
            suffix = "" if lockout is None else f"; locked out for {lockout:g} s"
            log.warning("wrong client key from client %r%s", client, suffix)
            raise GatewayError(
                401,
                "invalid_api_key",
                "the client key is not one of api-keys in the config; check the key you send",
                headers={"WWW-Authenticate": "Bearer"},
            )
        self.limiter.success(client)
        return key
