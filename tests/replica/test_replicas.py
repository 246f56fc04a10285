"""Three `cliproxy-host serve --config-store` processes against one real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ruamel.yaml import YAML

from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.discovery import platform_tag
from cliproxy_host.trust.keys import encode_public
from cliproxy_host.trust.signatures import sign

from ..serverutil import wait_until
from .postgres import PostgresServer

KEY = "replica-management-key"
CLIENT_KEY = "replica-client-key"
PLUGINS = "/v0/management/plugins"
CALL = "/v1/plugins/simple-c/executor.identifier"

# Every test here runs against a real PostgreSQL (the fixtures of conftest.py).
pytestmark = pytest.mark.postgres


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    client: httpx.Client
    log: Path

    def listing(self) -> dict[str, Any]:
        answer = self.client.get(PLUGINS)
        answer.raise_for_status()
        listing: dict[str, Any] = answer.json()
        return listing

    def entry(self) -> dict[str, Any]:
        return next(p for p in self.listing()["plugins"] if p["id"] == "simple-c")

    def settings(self) -> dict[str, Any]:
        answer = self.client.get(f"{PLUGINS}/simple-c/config")
        answer.raise_for_status()
        settings: dict[str, Any] = answer.json()
        return settings

    def serves(self) -> bool:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        return self.client.post(CALL, json={}, headers=headers).status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(root: Path, library: Path | None, dsn: str, trusted_keys: Sequence[str] = ()) -> Replica:
    """A serve process in `root`, with `library` as simple-c in its plugins dir (None: an
    empty plugins dir) and `trusted_keys` as its own plugins.trusted-keys."""
    os_name, arch = platform_tag()
    arch_dir = root / "plugins" / os_name / arch
    arch_dir.mkdir(parents=True)
    if library is not None:
        shutil.copyfile(library, arch_dir / f"simple-c{LIBRARY_SUFFIX}")
    config = root / "config.yaml"
    plugins: dict[str, Any] = {
        "enabled": True,
        "dir": "plugins",
        "configs": {"simple-c": {"enabled": False}},
    }
    if trusted_keys:
        plugins["trusted-keys"] = list(trusted_keys)
    with config.open("w", encoding="utf-8") as fh:
        YAML().dump({"api-keys": [CLIENT_KEY], "plugins": plugins}, fh)
    port = _free_port()
    log = root / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cliproxy_host.cli", "serve", "--config", str(config),
             "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CLIPROXY_MANAGEMENT_KEY": KEY, "CLIPROXY_CONFIG_STORE": dsn},
        )  # fmt: skip
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    return Replica(process, client, log)


def _up(replica: Replica) -> bool:
    assert replica.process.poll() is None, replica.log.read_text()
    try:
        return replica.client.get(PLUGINS).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def _running(
    tmp_path: Path, database: str, library: Path | None, keys: Sequence[Sequence[str]]
) -> Iterator[list[Replica]]:
    """One replica per entry of `keys` (its trusted keys), all up."""
    started: list[Replica] = []
    try:
        for n, trusted in enumerate(keys):
            started.append(_start(tmp_path / f"replica{n}", library, database, trusted))
        for replica in started:
            wait_until(lambda r=replica: _up(r), timeout=60)  # type: ignore[misc]
        yield started
    finally:
        for replica in started:
            replica.process.terminate()
        for replica in started:
            try:
                replica.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(timeout=10)
            replica.client.close()


@pytest.fixture
def replicas(tmp_path: Path, database: str, examples: dict[str, Path]) -> Iterator[list[Replica]]:
    with _running(tmp_path, database, examples["simple-c"], [(), (), ()]) as started:
        yield started


def test_an_enable_on_one_replica_is_in_force_on_the_other_two(replicas: list[Replica]) -> None:
    first, *others = replicas
    assert all(not r.entry()["enabled"] for r in replicas)
    answer = first.client.patch(f"{PLUGINS}/simple-c/enabled", json={"enabled": True})
    assert answer.status_code == 200, answer.text
    started = time.monotonic()
    for replica in others:
        wait_until(lambda r=replica: r.entry()["enabled"], timeout=1.0)  # type: ignore[misc]
    assert time.monotonic() - started < 1.0
    for replica in replicas:
        wait_until(replica.serves, timeout=15)
        status = replica.listing()["config_store"]
        assert status["kind"] == "postgresql"
        assert status["connected"] is True


def test_a_config_written_on_two_replicas_at_once_ends_consistent(
    replicas: list[Replica],
) -> None:
    _, left, right = replicas
    outcomes: list[tuple[int, int]] = []
    barrier = threading.Barrier(2, timeout=10)

    def write(replica: Replica, side: int, rounds: int) -> None:
        for n in range(rounds):
            barrier.wait()
            answer = replica.client.patch(
                f"{PLUGINS}/simple-c/config", json={"writer": side, "round": n}
            )
            assert answer.status_code in (200, 409), answer.text
            if answer.status_code == 409:
                assert answer.json()["error"] == "config_conflict"
            outcomes.append((side, answer.status_code))

    threads = [
        threading.Thread(target=write, args=(left, 1, 10)),
        threading.Thread(target=write, args=(right, 2, 10)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 20
    assert any(code == 200 for _, code in outcomes)

    def same() -> bool:
        seen = [r.settings() for r in replicas]
        return all(s == seen[0] for s in seen)

    wait_until(same, timeout=2)
    final = replicas[0].settings()
    assert final["writer"] in (1, 2)
    assert final["round"] == 9 or any(code == 409 for _, code in outcomes)


def test_the_database_restarted_mid_run_loses_nothing(
    replicas: list[Replica], postgres: PostgresServer
) -> None:
    first, second, third = replicas
    assert first.client.patch(f"{PLUGINS}/simple-c/config", json={"before": 1}).status_code == 200
    wait_until(lambda: third.settings().get("before") == 1, timeout=2)
    postgres.stop()
    try:
        for replica in replicas:
            wait_until(
                lambda r=replica: r.listing()["config_store"]["connected"] is False,  # type: ignore[misc]
                timeout=10,
            )
            assert replica.settings().get("before") == 1, "the last good config stays"
        answer = second.client.patch(f"{PLUGINS}/simple-c/config", json={"during": 1})
        assert answer.status_code == 500
        assert answer.json()["error"] == "config_save_failed"
    finally:
        postgres.start()
    for replica in replicas:
        wait_until(lambda r=replica: r.listing()["config_store"]["connected"], timeout=20)  # type: ignore[misc]
    assert second.client.patch(f"{PLUGINS}/simple-c/config", json={"after": 1}).status_code == 200
    for replica in replicas:
        wait_until(lambda r=replica: r.settings().get("after") == 1, timeout=2)  # type: ignore[misc]
        assert replica.settings().get("before") == 1
        assert "during" not in replica.settings()
    assert "unreachable" in first.log.read_text()


def _upload_signed(replica: Replica, data: bytes, signer: Ed25519PrivateKey) -> None:
    """Upload `data` as simple-c 1.0.0 on `replica`, with signer's detached signature."""
    answer = replica.client.put(
        f"{PLUGINS}/simple-c/file",
        params={"version": "1.0.0", "signature": sign(data, signer).decode().strip()},
        content=data,
    )
    assert answer.status_code == 200, answer.text


def test_a_file_uploaded_on_one_replica_runs_on_those_whose_keys_signed_it(
    tmp_path: Path, database: str, examples: dict[str, Path]
) -> None:
    signer = Ed25519PrivateKey.generate()
    trusted = encode_public(signer.public_key())
    other = encode_public(Ed25519PrivateKey.generate().public_key())
    data = examples["simple-c"].read_bytes()
    with _running(tmp_path, database, None, [[trusted], [trusted], [other]]) as replicas:
        first, second, stranger = replicas
        _upload_signed(first, data, signer)
        wait_until(first.serves, timeout=15)
        wait_until(second.serves, timeout=15)
        os_name, arch = platform_tag()
        name = f"simple-c-v1.0.0{LIBRARY_SUFFIX}"
        taken = tmp_path / "replica1" / "plugins" / os_name / arch / name
        assert taken.read_bytes() == data
        # The third trusts another key: the database's copy is not enough for it.
        wait_until(lambda: "not taking the file of simple-c" in stranger.log.read_text(), 10)
        assert not (tmp_path / "replica2" / "plugins" / os_name / arch / name).exists()
        assert not stranger.serves()


def test_a_plugin_deleted_on_one_replica_is_gone_from_all(
    tmp_path: Path, database: str, examples: dict[str, Path]
) -> None:
    signer = Ed25519PrivateKey.generate()
    trusted = encode_public(signer.public_key())
    os_name, arch = platform_tag()
    name = f"simple-c-v1.0.0{LIBRARY_SUFFIX}"
    with _running(tmp_path, database, None, [[trusted], [trusted]]) as replicas:
        first, second = replicas
        _upload_signed(first, examples["simple-c"].read_bytes(), signer)
        wait_until(second.serves, timeout=15)
        taken = tmp_path / "replica1" / "plugins" / os_name / arch / name
        assert taken.is_file()
        assert second.client.delete(f"{PLUGINS}/simple-c").status_code == 200
        wait_until(lambda: not first.serves(), timeout=15)
        assert not (tmp_path / "replica0" / "plugins" / os_name / arch / name).exists()
        assert not taken.exists()
        assert all(p["id"] != "simple-c" for p in first.listing()["plugins"])
