"""Short-lived signed links to plugin resources, so that a browser can open one without a
header, and the gate that admits a resource request by key, by link or (opt-in) openly."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from starlette.requests import Request

from .auth import ManagementAuth, presented_key
from .errors import ApiError

log = logging.getLogger(__name__)

EXP_PARAM: Final = "exp"
SIG_PARAM: Final = "sig"
# Where a fresh link comes from; every refusal says so.
_FRESH: Final = (
    "get a fresh link from resource_links in GET /v0/management/plugins, or send the management key"
)
_MAX_EXP_DIGITS: Final = 12  # Unix seconds until the year 33658: longer is no expiry of ours


@dataclass(frozen=True)
class Link:
    path: str  # the resource's full path
    url: str  # path and query, relative to the server
    expires_at: int | None  # Unix seconds; None: an open resource's plain path


class ResourceLinks:
    """Signs links (HMAC-SHA256 over method, exact path and expiry) with a key made for this
    process: a restart invalidates every link handed out before it. With open_resources
    (remote-management.open-plugin-resources), resources need no link: links are plain."""

    def __init__(
        self, *, open_resources: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self.open_resources = open_resources
        self._secret = secrets.token_bytes(32)
        self._clock = clock

    def _signature(self, method: str, path: str, expires_at: str) -> bytes:
        message = f"{method}\n{path}\n{expires_at}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest().encode("ascii")

    def link(self, path: str, ttl: int) -> Link:
        """A link that opens GET `path` for `ttl` seconds from now (open: the path itself)."""
        if self.open_resources:
            return Link(path, quote(path), None)
        expires_at = int(self._clock()) + ttl
        sig = self._signature("GET", path, str(expires_at)).decode("ascii")
        url = f"{quote(path)}?{EXP_PARAM}={expires_at}&{SIG_PARAM}={sig}"
        return Link(path, url, expires_at)

    def check(self, method: str, path: str, exp: str | None, sig: str | None) -> None:
        """Pass when the link is valid for this method and path now, else raise ApiError:
        401 resource_link_expired, 403 invalid_resource_link (tampered, another path or
        method, malformed)."""
        if not exp or not sig or not exp.isdigit() or len(exp) > _MAX_EXP_DIGITS:
            raise ApiError(
                403,
                "invalid_resource_link",
                f"the link to {path} needs both {EXP_PARAM} and {SIG_PARAM} as handed out; "
                + _FRESH,
            )
        expected = self._signature(method, path, exp)
        # Constant time: a mismatch must not tell how many leading characters were right.
        if not hmac.compare_digest(expected, sig.encode("utf-8", "replace")):
            raise ApiError(
                403,
                "invalid_resource_link",
                f"the link's signature does not match {method} {path} (links open only the "
                "exact path they were made for, with GET); " + _FRESH,
            )
        if int(exp) <= self._clock():
            raise ApiError(
                401, "resource_link_expired", f"the link to {path} has expired; " + _FRESH
            )


class ResourceGate:
    """The dependency of /v0/resource/plugins/...: the network rule always, then either
    nothing (open resources, the Go host's way), a valid signed link, or the key."""

    def __init__(self, auth: ManagementAuth, links: ResourceLinks) -> None:
        self._auth = auth
        self._links = links

    async def __call__(self, request: Request) -> None:
        await self._auth.network(request)
        if self._links.open_resources:
            return
        query = request.query_params
        if presented_key(request.headers) is not None:
            await self._auth(request)
            return
        if EXP_PARAM in query or SIG_PARAM in query:
            self._links.check(
                request.method, request.url.path, query.get(EXP_PARAM), query.get(SIG_PARAM)
            )
            return
        raise ApiError(
            401,
            "missing_management_key",
            "send the management key as 'Authorization: Bearer <key>' or "
            "'X-Management-Key: <key>', or open the signed link from resource_links in "
            "GET /v0/management/plugins",
            headers={"WWW-Authenticate": "Bearer"},
        )
