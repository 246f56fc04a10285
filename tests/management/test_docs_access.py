"""The docs pages work without internet and without the key, under the network rule; every
other host route still needs the key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from cliproxy_host.host.service import HostService
from cliproxy_host.management.app import create_app
from cliproxy_host.management.auth import KeyChecker, ManagementAuth

from ..conftest import HostFactory
from ..serverutil import KEY, RunningServer, run_server

# What each asset's Content-Type must start with, by the file's extension.
TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",)}
TYPES[".png"] = ("image/png",)
DOCS = ("/docs", "/openapi.json", "/docs/oauth2-redirect")


@pytest.fixture
def server(examples: dict[str, Path], host_factory: HostFactory) -> Iterator[RunningServer]:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True, "mode": "safe"}})
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        yield running


class Assets(HTMLParser):
    """Every <script src> and <link href> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.scripts.append(str(values["src"]))
        if tag == "link" and values.get("href"):
            self.links.append(str(values["href"]))


def test_the_docs_page_loads_only_same_origin_assets_that_answer(server: RunningServer) -> None:
    page = server.anonymous.get("/docs")
    assert page.status_code == 200
    assets = Assets()
    assets.feed(page.text)
    assert assets.scripts
    assert any(href.endswith(".css") for href in assets.links)
    origin = urlsplit(server.base_url)
    for ref in [*assets.scripts, *assets.links]:
        url = urljoin(server.base_url + "/docs", ref)
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), ref
        answer = server.anonymous.get(url)
        assert answer.status_code == 200, ref
        kinds = TYPES[Path(parts.path).suffix]
        assert answer.headers["content-type"].startswith(kinds), ref
        assert len(answer.content) > 1000, ref
    # Nothing else on the page reaches another host (Swagger UI's online validator included).
    assert "http://" not in page.text
    assert "https://" not in page.text


def test_an_unknown_docs_asset_is_a_json_404(server: RunningServer) -> None:
    response = server.anonymous.get("/docs/assets/../../etc/passwd")
    assert response.status_code == 404
    response = server.anonymous.get("/docs/assets/redoc.standalone.js")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_the_docs_need_no_key_and_every_other_route_does(server: RunningServer) -> None:
    for path in DOCS:
        assert server.anonymous.get(path).status_code == 200, path
    document = server.anonymous.get("/openapi.json").json()
    operations = [
        (method.upper(), path.replace("{plugin_id}", "simple-c"))
        for path, item in document["paths"].items()
        for method in item
    ]
    assert len(operations) == 11  # 6 plugin routes, the store's 2, the upload, audit, /metrics
    # Plugin routes and resources, which the document leaves out, too.
    operations += [
        ("GET", "/v0/management/simple-c/status"),
        ("GET", "/v0/resource/plugins/simple-c/index.html"),
    ]
    for method, path in operations:
        response = server.anonymous.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"] == "missing_management_key"
    assert server.client.get("/v0/management/plugins").status_code == 200


def test_the_document_holds_no_plugin_data(server: RunningServer) -> None:
    listing = server.client.get("/v0/management/plugins").json()
    assert listing["plugins"][0]["registered"] is True
    response = server.anonymous.get("/openapi.json")
    text = response.text
    for private in ("simple-c", "index.html", str(server.service.config_path)):
        assert private not in text
    # The host's routes only: no plugin route or resource is listed.
    host_paths = {"/v0/management/audit", "/metrics"}
    assert all(
        path.startswith(("/v0/management/plugins", "/v0/management/plugin-store"))
        or path in host_paths
        for path in response.json()["paths"]
    )
    assert KEY not in text


def remote_get(config: Path, path: str, *, allow_remote: bool) -> httpx.Response:
    """GET path from a client at 203.0.113.7 (not loopback), through the real app."""
    service = HostService(config)
    app = create_app(service, ManagementAuth(KeyChecker(None, KEY), allow_remote=allow_remote))

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            return await client.get(path)

    return asyncio.run(get())


@pytest.mark.parametrize("path", [*DOCS, "/docs/assets/swagger-ui.css"])
def test_the_docs_are_under_the_network_rule(host_factory: HostFactory, path: str) -> None:
    config = host_factory.write_config(configs={})
    refused = remote_get(config, path, allow_remote=False)
    assert refused.status_code == 403
    body: dict[str, Any] = refused.json()
    assert body["error"] == "remote_management_disabled"
    assert remote_get(config, path, allow_remote=True).status_code == 200
