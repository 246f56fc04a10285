"""The registry's validation (the Go host's required fields and rules), the sources (the
official one first, IDs from the URL) and the https rule for store URLs."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from cliproxy_host.config import HostConfig
from cliproxy_host.errors import ConfigError
from cliproxy_host.store.registry import RegistryProblem, parse_registry
from cliproxy_host.store.sources import OFFICIAL_URL, sources_of

SHA = "a" * 64


def direct(**overrides: Any) -> dict[str, Any]:
    plugin: dict[str, Any] = {
        "id": "p",
        "name": "P",
        "description": "d",
        "author": "a",
        "version": "1.0.0",
        "install": {
            "type": "direct",
            "artifacts": [
                {"goos": "linux", "goarch": "amd64", "url": "https://x.test/p.zip", "sha256": SHA}
            ],
        },
    }
    plugin.update(overrides)
    return plugin


def parse(*plugins: dict[str, Any], schema: int = 2) -> None:
    parse_registry(orjson.dumps({"schema_version": schema, "plugins": list(plugins)}))


def test_a_valid_registry_parses_with_aliases_normalised() -> None:
    plugin = direct()
    plugin["install"]["artifacts"][0].update(goos="macOS", goarch="x86_64", sha256=SHA.upper())
    registry = parse_registry(orjson.dumps({"schema_version": 2, "plugins": [plugin]}))
    (artifact,) = registry.plugins[0].install.artifacts
    assert (artifact.goos, artifact.goarch, artifact.sha256) == ("darwin", "amd64", SHA)


@pytest.mark.parametrize(
    ("plugins", "schema", "says"),
    [
        ([direct(name="")], 2, "plugins[0]: missing required field name"),
        ([direct(author=" ")], 2, "plugins[0]: missing required field author"),
        ([direct(id="../x")], 2, "invalid plugin id"),
        ([direct(version="v1.0.0")], 2, "invalid plugin version"),
        ([direct()], 1, "direct install requires schema_version 2"),
        ([direct()], 3, "unsupported schema_version 3"),
        ([direct(), direct()], 2, "plugins[1]: duplicate plugin id 'p'"),
        ([direct(install={"type": "direct", "artifacts": []})], 2, "at least one artifact"),
        ([direct(install={"type": "ftp"})], 2, "unsupported install type"),
        (
            [direct(install={"type": "direct", "artifacts": [{"goos": "linux", "goarch": "amd64",
             "url": "https://x.test/p.zip?token=1", "sha256": SHA}]})],
            2,
            "no user, query or fragment",
        ),
        (
            [direct(install={"type": "direct", "artifacts": [{"goos": "linux", "goarch": "amd64",
             "url": "https://x.test/p.zip", "sha256": "abc"}]})],
            2,
            "sha256 must be 64 hex digits",
        ),
        (
            [{"id": "g", "name": "G", "description": "d", "author": "a"}],
            1,
            "missing required field repository",
        ),
        (
            [{"id": "g", "name": "G", "description": "d", "author": "a",
              "repository": "https://gitlab.com/o/r"}],
            1,
            "repository must be https://github.com/{owner}/{repo}",
        ),
        (
            [direct(versions=[{"version": "1.0.0", "install": {"type": "direct"}}])],
            2,
            "versions[0]",
        ),
    ],
)  # fmt: skip
def test_an_invalid_registry_says_which_field(
    plugins: list[dict[str, Any]], schema: int, says: str
) -> None:
    with pytest.raises(RegistryProblem, match=None) as caught:
        parse(*plugins, schema=schema)
    assert says in str(caught.value)


def test_not_json_is_a_registry_problem() -> None:
    with pytest.raises(RegistryProblem, match="decode registry"):
        parse_registry(b"<html>")


def test_the_official_source_comes_first_and_sources_get_the_go_ids() -> None:
    config = HostConfig.from_mapping(
        {"plugins": {"store-sources": ["https://a.test/r.json", "https://a.test/r.json", " "]}}
    )
    official, mine = sources_of(config)
    assert official.as_dict() == {"id": "official", "name": "Official", "url": OFFICIAL_URL}
    # The Go host's ID: "source-" and the first 12 hex digits of the URL's sha256.
    assert mine.id == "source-" + hashlib.sha256(b"https://a.test/r.json").hexdigest()[:12]
    assert mine.name == "a.test"
    off = HostConfig.from_mapping({"plugins": {"store-official": False}})
    assert sources_of(off) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/registry.json",
        "http://localhost/registry.json",  # a name may resolve anywhere: only literal loopback
        "https://user:pw@example.com/registry.json",
        "ftp://example.com/registry.json",
    ],
)
def test_store_urls_must_be_https_unless_loopback(url: str) -> None:
    with pytest.raises(ConfigError, match=r"plugins.store-sources\[0\]: expected an https:// URL"):
        HostConfig.from_mapping({"plugins": {"store-sources": [url]}})


def test_loopback_store_urls_may_be_http() -> None:
    urls = ["http://127.0.0.1:8080/r.json", "http://[::1]/r.json", "https://example.com/r.json"]
    assert (
        HostConfig.from_mapping({"plugins": {"store-sources": urls}}).plugins.store_sources == urls
    )
