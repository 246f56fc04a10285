"""POST /v0/management/plugin-store/{id}/install and GET /v0/management/plugin-store against
a real registry on loopback: what an install writes, and every refusal leaving no trace."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from ruamel.yaml import YAML

from cliproxy_host.store.sources import source_id

from ..conftest import HostFactory
from ..serverutil import RunningServer, run_server, wait_until
from .conftest import EXT, GOARCH, GOOS, Store, disk_state, sha256, store_config, zip_of

INSTALL = "/v0/management/plugin-store/{}/install"


def entry_of(config_path: Path, plugin_id: str) -> dict[str, Any]:
    data = YAML(typ="safe").load(config_path.read_text())
    entry: dict[str, Any] = data["plugins"].get("configs", {}).get(plugin_id) or {}
    return entry


@pytest.fixture
def running(store: Store, host_factory: HostFactory) -> Iterator[RunningServer]:
    store.direct("sp")
    store_config(host_factory, [store.url])
    with run_server(host_factory.config_path) as server:
        assert server.service.wait_ready(30)
        yield server


def test_an_install_writes_the_file_enables_it_and_loads_it_in_a_worker(
    running: RunningServer, store: Store, host_factory: HostFactory, libraries: dict[str, bytes]
) -> None:
    response = running.client.post(INSTALL.format("sp"))
    assert response.status_code == 200, response.text
    body = response.json()
    target = host_factory.plugins_dir / GOOS / GOARCH / f"sp-v2.0.0{EXT}"
    assert body == {
        "status": "installed",
        "source_id": source_id(store.url),
        "source_name": f"127.0.0.1:{store.server.port}",
        "source_url": store.url,
        "id": "sp",
        "version": "2.0.0",
        "install_type": "direct",
        "path": str(target),
        "plugins_enabled": True,
        "restart_required": False,
        "isolation": "process",
    }
    assert target.read_bytes() == libraries["2.0.0"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    entry = entry_of(host_factory.config_path, "sp")
    assert entry["enabled"] is True
    assert entry["isolation"] == "process"
    assert entry["store"]["version"] == "2.0.0"
    assert entry["store"]["source-id"] == source_id(store.url)
    assert entry["store"]["install"]["type"] == "direct"
    info = running.service.host.plugin("sp")
    assert info is not None
    assert (info.registered, info.isolation) == (True, "process")
    # No temp file of the download or the unpacking is left beside it.
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]

    listing = running.client.get("/v0/management/plugin-store").json()
    (item,) = listing["plugins"]
    assert (item["installed"], item["installed_version"]) == (True, "2.0.0")
    assert item["install_source_status"] == "matched"
    assert item["update_available"] is False
    assert item["platforms"] == [{"goos": GOOS, "goarch": GOARCH}]


def test_the_operator_may_keep_an_installed_plugin_in_process(
    running: RunningServer, host_factory: HostFactory
) -> None:
    response = running.client.post(INSTALL.format("sp"), json={"isolation": "inprocess"})
    assert response.status_code == 200, response.text
    assert response.json()["isolation"] == "inprocess"
    assert entry_of(host_factory.config_path, "sp")["isolation"] == "inprocess"


def test_a_version_is_chosen_by_query_or_body(
    running: RunningServer, host_factory: HostFactory, libraries: dict[str, bytes]
) -> None:
    by_query = running.client.post(INSTALL.format("sp"), params={"version": "v1.0.0"})
    assert by_query.status_code == 200, by_query.text
    assert by_query.json()["version"] == "1.0.0"
    by_body = running.client.post(INSTALL.format("sp"), json={"version": "1.1.0"})
    assert by_body.status_code == 200, by_body.text
    path = Path(by_body.json()["path"])
    assert path.name == f"sp-v1.1.0{EXT}"
    assert path.read_bytes() == libraries["1.1.0"]
    # Pinned by the store entry: the host loads the version installed last.
    assert entry_of(host_factory.config_path, "sp")["store"]["version"] == "1.1.0"
    wait_until(
        lambda: (running.service.host.plugin("sp") or object()).__dict__.get("path") == str(path)
    )


def refused(
    server: RunningServer,
    host_factory: HostFactory,
    status: int,
    code: str,
    *args: Any,
    **kwargs: Any,
) -> str:
    """Send an install that must be refused: the code, and nothing changed on disk."""
    before = disk_state(host_factory.plugins_dir)
    config_before = host_factory.config_path.read_bytes()
    response = server.client.post(*args, **kwargs)
    assert (response.status_code, response.json()["error"]) == (status, code), response.text
    assert disk_state(host_factory.plugins_dir) == before
    assert host_factory.config_path.read_bytes() == config_before
    message: str = response.json()["message"]
    return message


def test_a_version_conflict_between_query_and_body_is_an_invalid_request(
    running: RunningServer, host_factory: HostFactory
) -> None:
    message = refused(
        running, host_factory, 400, "invalid_request", INSTALL.format("sp"),
        params={"version": "1.0.0"}, json={"version": "2.0.0"},
    )  # fmt: skip
    assert "1.0.0" in message
    assert "2.0.0" in message


def test_a_version_the_store_does_not_offer_is_refused(
    running: RunningServer, host_factory: HostFactory
) -> None:
    message = refused(
        running, host_factory, 502, "plugin_manifest_invalid", INSTALL.format("sp"),
        params={"version": "9.9.9"},
    )  # fmt: skip
    assert "offered: 2.0.0, 1.0.0, 1.1.0" in message


def test_unknown_sources_and_plugins_are_404(
    running: RunningServer, host_factory: HostFactory
) -> None:
    refused(
        running, host_factory, 404, "plugin_store_source_not_found", INSTALL.format("sp"),
        params={"source": "source-000000000000"},
    )  # fmt: skip
    refused(running, host_factory, 404, "plugin_not_found", INSTALL.format("nope"))


def _break(store: Store, how: str, libraries: dict[str, bytes]) -> None:
    """Publish a `bad` plugin whose first version (1.0.0) is broken in the way `how` says."""
    lib = libraries["1.0.0"]
    good_zip = zip_of({f"bad{EXT}": lib})
    if how == "tampered":
        store.direct("bad", ("1.0.0",), sha="0" * 64)
    elif how == "wrong size":
        store.direct("bad", ("1.0.0",), size=len(good_zip) - 10)
    elif how == "truncated":
        store.direct("bad", ("1.0.0",))
        path = f"/bad/1.0.0/bad_1.0.0_{GOOS}_{GOARCH}.zip"
        store.server.routes[path].mode = "truncate"
    elif how == "zip slip":
        store.direct("bad", ("1.0.0",), archive={f"bad{EXT}": lib, f"../../bad{EXT}": lib})
    elif how == "nested library":
        store.direct("bad", ("1.0.0",), archive={f"lib/bad{EXT}": lib})
    elif how == "symlink entry":
        store.direct("bad", ("1.0.0",), archive={f"bad{EXT}": lib})
        path = f"/bad/1.0.0/bad_1.0.0_{GOOS}_{GOARCH}.zip"
        data = zip_of({f"bad{EXT}": lib}, symlinks={"link": "/etc/passwd"})
        store.server.routes[path].body = data
        store.plugins[-1]["install"]["artifacts"][0].update(sha256=sha256(data), size=len(data))
        store.publish()
    elif how == "not a library":
        store.direct("bad", ("1.0.0",), archive={f"bad{EXT}": b"#!/bin/sh\necho not a library\n"})
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("tampered", "sha256 mismatch"),
        ("wrong size", "declares"),
        ("truncated", "peer closed connection"),
        ("zip slip", "outside the archive"),
        ("nested library", "at the root"),
        ("symlink entry", "not a regular file"),
        ("not a library", f"bad-v1.0.0{EXT}: not a shared library"),
    ],
)
def test_a_bad_artifact_is_refused_and_leaves_nothing(
    running: RunningServer,
    store: Store,
    *,
    host_factory: HostFactory,
    libraries: dict[str, bytes],
    how: str,
    says: str,
) -> None:
    _break(store, how, libraries)
    message = refused(running, host_factory, 502, "plugin_install_failed", INSTALL.format("bad"))
    assert says in message, message


def test_two_sources_with_one_plugin_need_a_choice_and_keep_to_it(
    store: Store, host_factory: HostFactory
) -> None:
    store.direct("sp")
    other = Store(store.server, store.libraries, registry_path="/other/registry.json")
    other.direct("sp")
    store_config(host_factory, [store.url, other.url], enabled=False)
    with run_server(host_factory.config_path) as server:
        response = server.client.post(INSTALL.format("sp"))
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["error"] == "plugin_store_source_required"
        assert [s["url"] for s in body["sources"]] == [store.url, other.url]
        chosen = server.client.post(INSTALL.format("sp"), params={"source": source_id(other.url)})
        assert chosen.status_code == 200, chosen.text
        refused(
            server, host_factory, 409, "plugin_store_source_conflict", INSTALL.format("sp"),
            params={"source": source_id(store.url)},
        )  # fmt: skip


def test_unreachable_sources_answer_in_bounded_time_in_source_errors(
    store: Store, host_factory: HostFactory
) -> None:
    store.direct("sp")
    hanging = store.server.put("/hang.json", b"", mode="hang")
    refused_port = "http://127.0.0.1:9/registry.json"  # discard port: nothing listens
    store_config(
        host_factory, [hanging, store.url, refused_port], enabled=False, store_timeout_seconds=1
    )
    with run_server(host_factory.config_path) as server:
        started = time.monotonic()
        response = server.client.get("/v0/management/plugin-store")
        elapsed = time.monotonic() - started
        # An install looks in every source too, in the same bounded time.
        started = time.monotonic()
        installed = server.client.post(INSTALL.format("sp"))
        install_elapsed = time.monotonic() - started
    assert installed.status_code == 200, installed.text
    assert install_elapsed < 4, f"the install took {install_elapsed:.1f}s"
    assert response.status_code == 200, response.text
    assert elapsed < 4, f"the list took {elapsed:.1f}s"
    body = response.json()
    assert [e["source_url"] for e in body["source_errors"]] == [hanging, refused_port]
    assert "within 1 s" in body["source_errors"][0]["message"]
    assert [p["id"] for p in body["plugins"]] == ["sp"]
    assert [s["url"] for s in body["sources"]] == [hanging, store.url, refused_port]


def test_no_readable_source_is_a_registry_failure(store: Store, host_factory: HostFactory) -> None:
    broken = store.server.put("/broken.json", b'{"schema_version": 1, "plugins": [{"id": "x"}]}')
    store_config(host_factory, [broken], enabled=False)
    with run_server(host_factory.config_path) as server:
        response = server.client.get("/v0/management/plugin-store")
        assert response.status_code == 502
        assert response.json()["error"] == "plugin_store_registry_failed"
        assert "missing required field name" in response.json()["message"]
        refused(server, host_factory, 502, "plugin_store_registry_failed", INSTALL.format("x"))


def test_a_github_release_is_verified_with_its_checksums(
    store: Store, host_factory: HostFactory, libraries: dict[str, bytes]
) -> None:
    archive = zip_of({f"gh{EXT}": libraries["1.1.0"]})
    name = f"gh_1.1.0_{GOOS}_{GOARCH}.zip"
    asset = store.server.put(f"/dl/{name}", archive)
    sums = store.server.put("/dl/checksums.txt", f"{sha256(archive)}  {name}\n".encode())
    release = {
        "tag_name": "v1.1.0",
        "assets": [
            {"name": name, "browser_download_url": asset},
            {"name": "checksums.txt", "browser_download_url": sums},
        ],
    }
    store.server.put("/api/repos/tests/gh/releases/latest", orjson.dumps(release))
    store.plugins.append(
        {
            "id": "gh",
            "name": "GH",
            "description": "a github-release plugin",
            "author": "tests",
            "repository": "https://github.com/tests/gh",
        }
    )
    store.publish()
    store_config(
        host_factory, [store.url], enabled=False, store_github_api=store.server.url("/api")
    )
    with run_server(host_factory.config_path) as server:
        response = server.client.post(INSTALL.format("gh"))
        assert response.status_code == 200, response.text
        assert response.json()["version"] == "1.1.0"
        assert Path(response.json()["path"]).read_bytes() == libraries["1.1.0"]
        entry = entry_of(host_factory.config_path, "gh")
        assert entry["store"]["release-tag"] == "v1.1.0"
        assert entry["store"]["install"] == {"type": "github-release"}
        # The same release with a checksums.txt that does not match: refused.
        store.server.put("/dl/checksums.txt", f"{'1' * 64}  {name}\n".encode())
        server.client.delete("/v0/management/plugins/gh")
        message = refused(server, host_factory, 502, "plugin_install_failed", INSTALL.format("gh"))
        assert "sha256 mismatch" in message
