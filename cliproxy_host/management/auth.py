"""Management key checks, brute-force slowdown and the FastAPI dependency guarding every route."""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import threading
from collections import OrderedDict

import anyio.to_thread
import bcrypt
from starlette.datastructures import Headers
from starlette.requests import Request

from ..web.keys import digest as _digest
from ..web.keys import match_index
from ..web.limiter import FailureLimiter
from ..web.network import is_loopback
from .errors import ApiError

__all__ = [
    "ENV_KEY",
    "FailureLimiter",
    "KeyChecker",
    "ManagementAuth",
    "generate_key",
    "hash_key",
    "is_hashed",
    "is_loopback",
    "key_from_env",
    "presented_key",
    "protect_secret",
]

log = logging.getLogger(__name__)

ENV_KEY = "CLIPROXY_MANAGEMENT_KEY"

# Modular crypt format of bcrypt: version, two-digit cost (4..31), 22 chars salt + 31 chars hash.
_BCRYPT_RE = re.compile(r"\$2[aby]\$(?:0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# bcrypt only looks at the first 72 bytes; bcrypt>=5 refuses longer input instead of
# silently truncating, as Go's bcrypt.GenerateFromPassword does.
_BCRYPT_MAX_BYTES = 72


def generate_key() -> str:
    """A fresh random management key: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def is_hashed(value: str) -> bool:
    """Whether value is a bcrypt hash ($2a$, $2b$ or $2y$) rather than a plaintext key."""
    return _BCRYPT_RE.fullmatch(value) is not None


def hash_key(key: str) -> str:
    """The bcrypt hash of key (random salt, default cost). Raises ValueError for an empty
    key or one longer than bcrypt's 72-byte limit."""
    raw = key.encode()
    if not raw:
        raise ValueError("cannot hash an empty management key")
    if len(raw) > _BCRYPT_MAX_BYTES:
        raise ValueError(
            f"management key is {len(raw)} bytes; bcrypt takes at most {_BCRYPT_MAX_BYTES}, "
            "choose a shorter key"
        )
    return bcrypt.hashpw(raw, bcrypt.gensalt()).decode("ascii")


def protect_secret(value: str) -> str:
    """What the host writes to its config file for a secret: the bcrypt hash of a plaintext
    key, a hash unchanged, and "" (no key) unchanged."""
    if not value or is_hashed(value):
        return value
    return hash_key(value)


def key_from_env() -> str | None:
    """The management key from CLIPROXY_MANAGEMENT_KEY, or None when unset or empty."""
    return os.environ.get(ENV_KEY) or None


class KeyChecker:
    """Checks a presented key against every configured key, in constant time.

    Immutable: when the configuration changes, build a new one (its cache goes with it).
    """

    # A handful of entries suffices: only presented keys that matched a hash are stored.
    _CACHE_SIZE = 32

    def __init__(
        self, secret: str | None, env_key: str | None = None, *, generated: str | None = None
    ) -> None:
        """secret: the configured key (plaintext or bcrypt hash); env_key: see key_from_env;
        generated: a key the host made up for this run. None or "" means absent."""
        keys = [k for k in (secret, env_key, generated) if k]
        self._plain_digests = [_digest(k) for k in keys if not is_hashed(k)]
        self._hashes = [k.encode("ascii") for k in keys if is_hashed(k)]
        # SHA-256 digests of presented keys that passed bcrypt, least recently used first.
        self._good: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Never the keys themselves: a repr ends up in logs and tracebacks.
        return f"KeyChecker(plaintext={len(self._plain_digests)}, hashed={len(self._hashes)})"

    @property
    def configured(self) -> bool:
        """Whether any key exists; without one, no presented key is ever accepted."""
        return bool(self._plain_digests or self._hashes)

    def verify_fast(self, presented: str) -> bool | None:
        """The answer when it needs no bcrypt work (plaintext keys, earlier successes),
        None when only a bcrypt check can tell."""
        digest = _digest(presented)
        with self._lock:
            if digest in self._good:
                self._good.move_to_end(digest)
                return True
        if match_index(digest, self._plain_digests) is not None:
            return True
        if self._hashes and len(presented.encode()) <= _BCRYPT_MAX_BYTES:
            return None
        return False

    def verify(self, presented: str) -> bool:
        """Whether presented is one of the keys. Blocks for bcrypt's ~50-250 ms the first
        time a key is checked against a hash; run it off the event loop."""
        fast = self.verify_fast(presented)
        if fast is not None:
            return fast
        raw = presented.encode()
        if not any(bcrypt.checkpw(raw, hashed) for hashed in self._hashes):
            return False
        digest = _digest(presented)
        with self._lock:
            self._good[digest] = None
            self._good.move_to_end(digest)
            while len(self._good) > self._CACHE_SIZE:
                self._good.popitem(last=False)
        return True


def presented_key(headers: Headers) -> str | None:
    """The key from "Authorization: Bearer <key>", else from "X-Management-Key: <key>"."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-management-key", "").strip() or None


class ManagementAuth:
    """FastAPI dependency that admits a request only with a valid management key.

    Use as APIRouter(dependencies=[Depends(auth)]) and register api_error_handler for
    ApiError. limiter defaults to a FailureLimiter with its default settings.
    """

    def __init__(
        self,
        checker: KeyChecker,
        *,
        allow_remote: bool,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.checker = checker
        self.allow_remote = allow_remote
        self.limiter = limiter if limiter is not None else FailureLimiter()

    async def network(self, request: Request) -> None:
        """The rule on who may connect at all, before any key: loopback clients only, unless
        allow_remote. Every route passes it, the docs pages included."""
        host = request.client.host if request.client else None
        if not self.allow_remote and not is_loopback(host):
            log.warning("management request refused: client %r is not loopback", host)
            raise ApiError(
                403,
                "remote_management_disabled",
                "management is only served to loopback clients; "
                "set remote-management.allow-remote: true to allow others",
            )

    async def __call__(self, request: Request) -> None:
        await self.network(request)
        host = request.client.host if request.client else None
        client = host or "unknown"
        wait = self.limiter.check(client)
        if wait is not None:
            # Not a warning: a client hammering while locked out would flood the log.
            log.debug("management request refused: client %r is locked out", client)
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "too_many_attempts",
                f"too many wrong management keys from this address; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        if not self.checker.configured:
            log.warning("management request refused: no management key is configured")
            raise ApiError(
                403,
                "management_key_not_set",
                f"no management key is configured; set remote-management.secret-key "
                f"or the {ENV_KEY} environment variable",
            )
        presented = presented_key(request.headers)
        if presented is None:
            log.warning("management request without a key from client %r", client)
            raise ApiError(
                401,
                "missing_management_key",
                "send the management key as 'Authorization: Bearer <key>' "
                "or 'X-Management-Key: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        ok = self.checker.verify_fast(presented)
        if ok is None:
            ok = await anyio.to_thread.run_sync(self.checker.verify, presented)
        if not ok:
            lockout = self.limiter.failure(client)
            if lockout is None:
                log.warning("wrong management key from client %r", client)
            else:
                log.warning(
                    "wrong management key from client %r; locked out for %g s", client, lockout
                )
            raise ApiError(
                401,
                "invalid_management_key",
                "the management key is not valid; check remote-management.secret-key "
                f"or the {ENV_KEY} environment variable",
                headers={"WWW-Authenticate": "Bearer"},
            )
        self.limiter.success(client)
