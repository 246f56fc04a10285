"""Downloads for the store: streamed, capped in bytes and in time, redirects checked hop by
hop (https unless loopback), progress in the log for long ones."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..config import store_url_allowed

log = logging.getLogger(__name__)

MAX_REDIRECTS: Final = 10
# Registries, release descriptions and checksums.txt are small; an answer larger than this
# is not one of them.
MAX_METADATA_BYTES: Final = 8 * 1024 * 1024
PROGRESS_EVERY_BYTES: Final = 16 * 1024 * 1024
_CHUNK: Final = 64 * 1024
USER_AGENT: Final = "cliproxy-host-store"


class FetchFailed(Exception):
    """A download that did not complete: the message names the URL (without its query)."""


@dataclass(frozen=True)
class Fetched:
    """A download kept in a temp file beside its destination, and its sha256."""

    path: Path
    size: int
    sha256: str


def safe_url(url: str) -> str:
    """The URL as messages show it: no user, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the store URL"
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


class Fetcher:
    """Fetches store URLs within `timeout` seconds each (connecting, waiting and reading
    together), through `proxy` if one is set."""

    def __init__(self, *, timeout: float, proxy: str | None = None) -> None:
        self.timeout = timeout
        self.proxy = proxy

    def read(self, url: str, *, cap: int = MAX_METADATA_BYTES, accept: str = "*/*") -> bytes:
        """The body of `url`, at most `cap` bytes."""
        chunks: list[bytes] = []
        with self._stream(url, cap, accept) as body:
            for chunk in body:
                chunks.append(chunk)
        return b"".join(chunks)

    def download(self, url: str, directory: Path, *, cap: int) -> Fetched:
        """`url` streamed into a temp file in `directory` (so the install is a rename),
        hashed as it arrives. The caller owns the file; a failure leaves none."""
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".store-", suffix=".part")
        path = Path(name)
        digest = hashlib.sha256()
        size = 0
        try:
            with (
                os.fdopen(fd, "wb") as out,
                self._stream(url, cap, "application/octet-stream") as body,
            ):
                next_report = PROGRESS_EVERY_BYTES
                for chunk in body:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if size >= next_report:
                        log.info("store: %s: %d MiB so far", safe_url(url), size >> 20)
                        next_report += PROGRESS_EVERY_BYTES
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Fetched(path, size, digest.hexdigest())

    @contextmanager
    def _stream(self, url: str, cap: int, accept: str) -> Iterator[Iterator[bytes]]:
        deadline = time.monotonic() + self.timeout
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        try:
            with httpx.Client(
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                proxy=self.proxy,
                trust_env=False,
            ) as client:
                current = url
                for _hop in range(MAX_REDIRECTS + 1):
                    if not store_url_allowed(current):
                        raise FetchFailed(
                            f"{safe_url(current)}: the store fetches only https:// URLs"
                            " (http:// only on loopback) without a user or password"
                        )
                    with client.stream("GET", current, headers=headers) as response:
                        if response.is_redirect and "location" in response.headers:
                            current = str(response.url.join(response.headers["location"]))
                            continue
                        if response.status_code != 200:
                            raise FetchFailed(
                                f"{safe_url(current)}: answered HTTP {response.status_code}"
                            )
                        yield self._capped(response, current, cap, deadline)
                        return
                raise FetchFailed(f"{safe_url(url)}: more than {MAX_REDIRECTS} redirects")
        except httpx.TimeoutException:
            raise FetchFailed(
                f"{safe_url(url)}: no answer within {self.timeout:g} s"
                " (plugins.store-timeout-seconds)"
            ) from None
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{safe_url(url)}: {type(exc).__name__}: {exc}") from None

    def _capped(
        self, response: httpx.Response, url: str, cap: int, deadline: float
    ) -> Iterator[bytes]:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise FetchFailed(f"{safe_url(url)}: {declared} bytes, more than the {cap} allowed")
        size = 0
        for chunk in response.iter_bytes(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise FetchFailed(f"{safe_url(url)}: more than the {cap} bytes allowed")
            if time.monotonic() > deadline:
                raise FetchFailed(
                    f"{safe_url(url)}: not complete within {self.timeout:g} s"
                    " (plugins.store-timeout-seconds)"
                )
            yield chunk
