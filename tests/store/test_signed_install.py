"""Installs and uploads under plugins.trusted-keys: a signed upload runs in-process with its
`.sig` beside it; unsigned under require-signature, or signed by a stranger: refused (403),
nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cliproxy_host.trust.keys import encode_public
from cliproxy_host.trust.signatures import sign

from ..conftest import HostFactory
from ..serverutil import RunningServer, run_server
from .conftest import EXT, GOARCH, GOOS, Store, disk_state, store_config
from .test_install import entry_of

FILE = "/v0/management/plugins/{}/file"
SIGNER = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


@pytest.fixture
def running(host_factory: HostFactory, store: Store) -> Iterator[RunningServer]:
    store.direct("up")  # published with its zips
    store_config(
        host_factory,
        [store.url],
        trusted_keys=[encode_public(SIGNER.public_key())],
        require_signature=True,
    )
    with run_server(host_factory.config_path) as server:
        assert server.service.wait_ready(30)
        yield server


def test_a_signed_upload_runs_in_process_with_its_signature_beside_it(
    running: RunningServer, host_factory: HostFactory, libraries: dict[str, bytes]
) -> None:
    data = libraries["1.0.0"]
    signature = sign(data, SIGNER).decode().strip()
    response = running.client.put(
        FILE.format("up"), params={"version": "1.0.0", "signature": signature}, content=data
    )
    assert response.status_code == 200, response.text
    assert response.json()["isolation"] == "inprocess"
    target = host_factory.plugins_dir / GOOS / GOARCH / f"up-v1.0.0{EXT}"
    assert target.read_bytes() == data
    assert target.with_name(target.name + ".sig").read_text().strip() == signature
    assert entry_of(host_factory.config_path, "up")["isolation"] == "inprocess"
    info = running.service.host.plugin("up")
    assert info is not None
    assert (info.registered, info.isolation) == (True, "inprocess"), info.error


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("unsigned upload", "signature_missing"),
        ("stranger's signature", "signature_invalid"),
        ("signature of other bytes", "signature_invalid"),
        ("store install", "signature_missing"),
    ],
)
def test_an_install_the_trusted_keys_refuse_leaves_nothing(
    running: RunningServer,
    host_factory: HostFactory,
    libraries: dict[str, bytes],
    case: str,
    code: str,
) -> None:
    data = libraries["1.0.0"]
    params = {"version": "1.0.0"}
    if case == "stranger's signature":
        params["signature"] = sign(data, STRANGER).decode().strip()
    elif case == "signature of other bytes":
        params["signature"] = sign(libraries["2.0.0"], SIGNER).decode().strip()
    before = disk_state(host_factory.plugins_dir)
    config_before = host_factory.config_path.read_bytes()
    if case == "store install":
        response = running.client.post(
            "/v0/management/plugin-store/up/install", params={"version": "1.0.0"}
        )
    else:
        response = running.client.put(FILE.format("up"), params=params, content=data)
    assert (response.status_code, response.json()["error"]) == (403, code), response.text
    assert "plugins.trusted-keys" in response.json()["message"]
    assert (
        str(host_factory.plugins_dir / GOOS / GOARCH / f"up-v1.0.0{EXT}")
        in (response.json()["message"])
    )
    assert disk_state(host_factory.plugins_dir) == before
    assert host_factory.config_path.read_bytes() == config_before
