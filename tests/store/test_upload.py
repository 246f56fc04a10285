"""PUT /v0/management/plugins/{id}/file: its own cap, streamed to disk, the store's checks,
the same atomic install and reload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import HostFactory
from ..serverutil import RunningServer, run_server
from .conftest import EXT, GOARCH, GOOS, disk_state, sha256, store_config, zip_of
from .test_install import entry_of

FILE = "/v0/management/plugins/{}/file"
CAP = 200_000  # above a test library (about 40 KB), below what test_too_large sends


@pytest.fixture
def running(host_factory: HostFactory) -> Iterator[RunningServer]:
    # A management body cap far below a library: the upload has a cap of its own.
    store_config(host_factory, [], max_upload_bytes=CAP)
    path = host_factory.config_path
    path.write_text(path.read_text() + "remote-management:\n  max-body-bytes: 1024\n")
    with run_server(path) as server:
        assert server.service.wait_ready(30)
        yield server


def test_an_uploaded_library_is_installed_enabled_and_loaded(
    running: RunningServer, host_factory: HostFactory, libraries: dict[str, bytes]
) -> None:
    data = libraries["1.0.0"]
    response = running.client.put(
        FILE.format("up"), params={"version": "1.0.0", "sha256": sha256(data)}, content=data
    )
    assert response.status_code == 200, response.text
    body = response.json()
    target = host_factory.plugins_dir / GOOS / GOARCH / f"up-v1.0.0{EXT}"
    assert (body["status"], body["install_type"], body["path"]) == (
        "installed",
        "upload",
        str(target),
    )
    assert target.read_bytes() == data
    entry = entry_of(host_factory.config_path, "up")
    assert entry == {
        "enabled": True,
        "isolation": "process",
        "store": {"version": "1.0.0", "source-id": "upload"},
    }
    info = running.service.host.plugin("up")
    assert info is not None
    assert (info.registered, info.isolation) == (True, "process")
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_an_uploaded_zip_is_unpacked_like_a_store_download(
    running: RunningServer, host_factory: HostFactory, libraries: dict[str, bytes]
) -> None:
    archive = zip_of({f"up{EXT}": libraries["1.1.0"]})
    response = running.client.put(
        FILE.format("up"),
        params={"version": "1.1.0", "isolation": "inprocess"},
        content=archive,
    )
    assert response.status_code == 200, response.text
    assert Path(response.json()["path"]).read_bytes() == libraries["1.1.0"]
    assert entry_of(host_factory.config_path, "up")["isolation"] == "inprocess"


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("sha256 mismatch", 400, "plugin_upload_invalid"),
        ("not a library", 400, "plugin_upload_invalid"),
        ("too large", 413, "body_too_large"),
        ("too large, chunked", 413, "body_too_large"),
        ("zip slip", 400, "plugin_upload_invalid"),
        ("no version", 400, "invalid_body"),
        ("bad version", 400, "invalid_request"),
    ],
)
def test_a_refused_upload_leaves_nothing(
    running: RunningServer,
    host_factory: HostFactory,
    *,
    libraries: dict[str, bytes],
    case: str,
    status: int,
    code: str,
) -> None:
    data = libraries["1.0.0"]
    params: dict[str, str] = {"version": "1.0.0"}
    content: bytes | Iterator[bytes] = data
    if case == "sha256 mismatch":
        params["sha256"] = "0" * 64
    elif case == "too large":
        content = data * 6
    elif case == "too large, chunked":
        content = iter([data] * 6)
    elif case == "not a library":
        content = b"\x7fELF but not really"
    elif case == "zip slip":
        content = zip_of({f"up{EXT}": data, f"../up{EXT}": data})
    elif case == "no version":
        del params["version"]
    elif case == "bad version":
        params["version"] = "latest"
    before = disk_state(host_factory.plugins_dir)
    config_before = host_factory.config_path.read_bytes()
    response = running.client.put(FILE.format("up"), params=params, content=content)
    assert (response.status_code, response.json()["error"]) == (status, code), response.text
    assert disk_state(host_factory.plugins_dir) == before
    assert host_factory.config_path.read_bytes() == config_before
    if code == "body_too_large":
        assert "plugins.max-upload-bytes" in response.json()["message"]


def test_other_routes_keep_the_management_body_cap(running: RunningServer) -> None:
    response = running.client.put("/v0/management/plugins/up/config", json={"x": "y" * 2000})
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")


def test_an_upload_sent_as_json_is_415(running: RunningServer, host_factory: HostFactory) -> None:
    before = disk_state(host_factory.plugins_dir)
    response = running.client.put(
        FILE.format("up"), params={"version": "1.0.0"}, json={"file": "not one"}
    )
    assert (response.status_code, response.json()["error"]) == (415, "unsupported_media_type")
    assert disk_state(host_factory.plugins_dir) == before
