"""Browser access to plugin resources: short-lived signed links in the plugin list, and the
opt-in open mode of the Go host, over a real server with the real C example's resource."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cliproxy_host.config.schema import HostConfig
from cliproxy_host.errors import ConfigError
from cliproxy_host.management.errors import ApiError
from cliproxy_host.management.resource_links import ResourceLinks

from ..conftest import HostFactory
from ..serverutil import RunningServer, run_server

PAGE = "/v0/resource/plugins/simple-c/index.html"
FRESH = "fresh link from resource_links in GET /v0/management/plugins"


def start(
    examples: dict[str, Path], host_factory: HostFactory, remote: dict[str, Any] | None = None
) -> Path:
    for pid in ("simple-c", "simple-rust"):
        host_factory.add(pid, examples[pid])
    configs = {"simple-c": {"enabled": True}, "simple-rust": {"enabled": True}}
    extra = {"remote-management": remote} if remote else None
    return host_factory.write_config(configs=configs, extra=extra)


@pytest.fixture
def server(examples: dict[str, Path], host_factory: HostFactory) -> Iterator[RunningServer]:
    with run_server(start(examples, host_factory)) as running:
        assert running.service.wait_ready(30)
        yield running


def links_of(server: RunningServer, pid: str) -> dict[str, dict[str, Any]]:
    listing = server.client.get("/v0/management/plugins").json()
    entry = next(p for p in listing["plugins"] if p["id"] == pid)
    return {link["path"]: link for link in entry["resource_links"]}


def refusal(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    message: str = body["message"]
    assert FRESH in message
    return message


def test_each_declared_resource_has_a_signed_link_that_opens_it_without_a_key(
    server: RunningServer,
) -> None:
    links = links_of(server, "simple-c")
    assert set(links) == {PAGE}
    link = links[PAGE]
    assert link["url"].startswith(PAGE + "?exp=")
    assert "&sig=" in link["url"]
    # The default TTL: five minutes from now.
    assert abs(link["expires_at"] - (time.time() + 300)) < 30
    page = server.anonymous.get(link["url"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "simple-c" in page.text
    # Without the link or a key, still refused, saying how to get in.
    bare = server.anonymous.get(PAGE)
    assert bare.status_code == 401
    assert "resource_links" in bare.json()["message"]


def test_a_tampered_link_or_one_for_another_path_or_method_is_refused(
    server: RunningServer,
) -> None:
    url = links_of(server, "simple-c")[PAGE]["url"]
    query = url.split("?", 1)[1]
    exp, sig = (part.split("=", 1)[1] for part in query.split("&"))
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    later = str(int(exp) + 3600)
    for tampered in (
        f"{PAGE}?exp={exp}&sig={flipped}",
        f"{PAGE}?exp={later}&sig={sig}",
        f"{PAGE}?exp={exp}",
        f"{PAGE}?exp=soon&sig={sig}",
        f"{PAGE}?exp={exp}&sig=%C3%A9",
        # Another plugin's resource, and a path the plugin does not serve, with this signature.
        f"/v0/resource/plugins/simple-rust/index.html?{query}",
        f"/v0/resource/plugins/simple-c/other.html?{query}",
    ):
        refusal(server.anonymous.get(tampered), 403, "invalid_resource_link")
    # The link is for GET: HEAD with it is another method (a HEAD answer has no body).
    head = server.anonymous.head(url)
    assert head.status_code == 403
    assert server.anonymous.get(url).status_code == 200


def test_the_key_still_opens_resources_and_a_wrong_key_is_not_helped_by_a_link(
    server: RunningServer,
) -> None:
    assert server.client.get(PAGE).status_code == 200
    url = links_of(server, "simple-c")[PAGE]["url"]
    wrong = server.anonymous.get(url, headers={"X-Management-Key": "not-the-key"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_management_key"


def test_an_expired_link_is_refused_with_401_and_how_to_get_a_fresh_one() -> None:
    now = [1_000_000.0]
    links = ResourceLinks(clock=lambda: now[0])
    link = links.link(PAGE, 300)
    query = dict(part.split("=", 1) for part in link.url.split("?", 1)[1].split("&"))
    links.check("GET", PAGE, query["exp"], query["sig"])
    now[0] += 299
    links.check("GET", PAGE, query["exp"], query["sig"])
    now[0] += 1
    with pytest.raises(ApiError) as caught:
        links.check("GET", PAGE, query["exp"], query["sig"])
    assert (caught.value.status, caught.value.code) == (401, "resource_link_expired")
    assert FRESH in caught.value.message
    # Another process (a restarted server) signs with another key: its links do not open.
    with pytest.raises(ApiError) as caught:
        ResourceLinks(clock=lambda: now[0]).check("GET", PAGE, query["exp"], query["sig"])
    assert caught.value.code == "invalid_resource_link"


def test_the_ttl_is_configurable_and_bounded(
    examples: dict[str, Path], host_factory: HostFactory
) -> None:
    config = start(examples, host_factory, {"resource-link-ttl": 60})
    with run_server(config) as running:
        assert running.service.wait_ready(30)
        expires = links_of(running, "simple-c")[PAGE]["expires_at"]
        assert abs(expires - (time.time() + 60)) < 30
    for bad in (0, 9, 86_401, "300", True):
        host_factory.write_config(
            configs={}, extra={"remote-management": {"resource-link-ttl": bad}}
        )
        with pytest.raises(ConfigError, match="resource-link-ttl"):
            HostConfig.load(host_factory.config_path)


def test_open_plugin_resources_serves_them_without_key_or_link_and_warns(
    examples: dict[str, Path], host_factory: HostFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    config = start(examples, host_factory, {"open-plugin-resources": True})
    with run_server(config) as running:
        assert running.service.wait_ready(30)
        link = links_of(running, "simple-c")[PAGE]
        assert (link["url"], link["expires_at"]) == (PAGE, None)
        page = running.anonymous.get(PAGE)
        assert page.status_code == 200
        assert "simple-c" in page.text
        # Only resources: the management routes still need the key.
        assert running.anonymous.get("/v0/management/plugins").status_code == 401
        assert running.anonymous.get("/v0/management/simple-c/status").status_code == 401
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("open-plugin-resources is true" in w for w in warnings)


def test_open_plugin_resources_is_off_by_default_and_only_a_boolean(
    host_factory: HostFactory,
) -> None:
    config = host_factory.write_config(configs={})
    assert HostConfig.load(config).remote_management.open_plugin_resources is False
    host_factory.write_config(
        configs={}, extra={"remote-management": {"open-plugin-resources": "yes"}}
    )
    with pytest.raises(ConfigError, match="open-plugin-resources"):
        HostConfig.load(host_factory.config_path)
