"""Store sources: the official registry first, then `plugins.store-sources`, each with the
Go host's ID (`source-` and 12 hex digits of the URL's sha256) and name (the URL's host)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from ..config import HostConfig
from ..errors import StoreSourceInvalid

OFFICIAL_URL: Final = (
    "https://raw.githubusercontent.com/router-for-me/CLIProxyAPI-Plugins-Store/main/registry.json"
)
OFFICIAL_ID: Final = "official"
OFFICIAL_NAME: Final = "Official"


@dataclass(frozen=True)
class Source:
    id: str
    name: str
    url: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "url": self.url}


def source_id(url: str) -> str:
    return "source-" + hashlib.sha256(url.strip().encode()).hexdigest()[:12]


def source_name(url: str) -> str:
    try:
        host = urlsplit(url.strip()).netloc
    except ValueError:
        host = ""
    return host or url.strip()


def sources_of(config: HostConfig) -> list[Source]:
    """The config's sources in order, duplicates dropped; StoreSourceInvalid if two URLs
    would share an ID."""
    out: list[Source] = []
    if config.plugins.store_official:
        out.append(Source(OFFICIAL_ID, OFFICIAL_NAME, OFFICIAL_URL))
    seen_urls = {s.url for s in out}
    seen_ids = {s.id: s.url for s in out}
    for raw in config.plugins.store_sources:
        url = raw.strip()
        if not url or url in seen_urls:
            continue
        source = Source(source_id(url), source_name(url), url)
        if source.id in seen_ids:
            raise StoreSourceInvalid(
                f"plugins.store-sources: {seen_ids[source.id]!r} and {url!r} share the source"
                f" ID {source.id}: remove one of them"
            )
        seen_urls.add(url)
        seen_ids[source.id] = url
        out.append(source)
    return out
