"""PgConfigStore against a real PostgreSQL: tables, first import, versions, NOTIFY, faults."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from cliproxy_host.errors import ConfigConflict, ConfigError, ConfigSaveFailed
from cliproxy_host.replica import PgConfigStore
from cliproxy_host.trust.digest import sha256_hex

from ..serverutil import wait_until
from .postgres import PostgresServer

# Every test here runs against a real PostgreSQL (the fixtures of conftest.py).
pytestmark = pytest.mark.postgres


def _config(path: Path, configs: dict[str, Any]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        YAML().dump({"plugins": {"dir": "plugins", "configs": configs}}, fh)
    return path


def _store(tmp_path: Path, name: str, dsn: str, configs: dict[str, Any]) -> PgConfigStore:
    path = _config(tmp_path / f"{name}.yaml", configs)
    return PgConfigStore(path, dsn, state_dir=tmp_path / f"{name}-state")


def test_an_empty_database_gets_the_tables_and_the_file_once(tmp_path: Path, database: str) -> None:
    first = _store(tmp_path, "a", database, {"alpha": {"enabled": True, "x": 1}})
    assert first.config.plugin_entry("alpha").enabled
    # A second replica with another file: the database is the truth now.
    second = _store(tmp_path, "b", database, {"beta": {"enabled": True}})
    assert set(second.config.plugins.configs) == {"alpha"}
    before = (tmp_path / "a.yaml").read_bytes()
    first.set_enabled("alpha", False)
    assert (tmp_path / "a.yaml").read_bytes() == before, "a replica never writes its file"


def test_a_write_is_in_force_on_another_replica_within_a_second(
    tmp_path: Path, database: str
) -> None:
    one = _store(tmp_path, "a", database, {"alpha": {"enabled": True}})
    two = _store(tmp_path, "b", database, {})
    seen = threading.Event()
    two.start(seen.set)
    try:
        wait_until(lambda: two.status.connected, timeout=5)
        started = time.monotonic()
        one.patch_plugin_config("alpha", {"enabled": False, "level": 3})
        assert seen.wait(1.0), "the other replica did not see the write within 1 s"
        assert time.monotonic() - started < 1.0
        entry = two.config.plugins.configs["alpha"]
        assert entry.enabled is False
        assert entry.model_extra == {"level": 3}
    finally:
        two.stop()


def test_a_write_on_a_stale_version_is_a_conflict_not_a_lost_update(
    tmp_path: Path, database: str
) -> None:
    one = _store(tmp_path, "a", database, {"alpha": {"enabled": True}})
    two = _store(tmp_path, "b", database, {})  # not listening: its view goes stale
    one.patch_plugin_config("alpha", {"first": 1})
    with pytest.raises(ConfigConflict) as caught:
        two.patch_plugin_config("alpha", {"second": 2})
    assert caught.value.http_status == 409
    assert "alpha" in str(caught.value)
    two.reload()
    two.patch_plugin_config("alpha", {"second": 2})
    one.reload()
    assert one.config.plugins.configs["alpha"].model_extra == {"first": 1, "second": 2}


def test_an_invalid_write_changes_nothing(tmp_path: Path, database: str) -> None:
    one = _store(tmp_path, "a", database, {"alpha": {"enabled": True}})
    with pytest.raises(ConfigError):
        one.patch_plugin_config("alpha", {"priority": "high"})
    two = _store(tmp_path, "b", database, {})
    assert two.config.plugins.configs["alpha"].model_extra == {}


def test_start_with_the_database_down(tmp_path: Path, database: str) -> None:
    down = "postgresql:///none?host=/nonexistent-cliproxy-socket-dir&user=postgres"
    with pytest.raises(ConfigError) as caught:
        _store(tmp_path, "a", down, {})
    assert "no local copy" in str(caught.value)
    # With a local copy from an earlier run: it starts on that copy, and says it is down.
    _store(tmp_path, "b", database, {"alpha": {"enabled": True}})
    kept = PgConfigStore(_config(tmp_path / "b.yaml", {}), down, state_dir=tmp_path / "b-state")
    assert kept.config.plugin_entry("alpha").enabled
    assert not kept.status.connected
    assert kept.status.error
    with pytest.raises(ConfigSaveFailed):
        kept.set_enabled("alpha", False)


def test_the_database_restarted_keeps_the_config_and_the_link(
    tmp_path: Path, database: str, postgres: PostgresServer
) -> None:
    one = _store(tmp_path, "a", database, {"alpha": {"enabled": True}})
    two = _store(tmp_path, "b", database, {})
    seen = threading.Event()
    two.start(seen.set)
    try:
        wait_until(lambda: two.status.connected, timeout=5)
        postgres.stop()
        try:
            wait_until(lambda: not two.status.connected, timeout=5)
            assert two.config.plugin_entry("alpha").enabled, "the last good config stays"
        finally:
            postgres.start()
        wait_until(lambda: two.status.connected, timeout=15)
        one.set_enabled("alpha", False)
        assert seen.wait(2.0)
        assert not two.config.plugin_entry("alpha").enabled
    finally:
        two.stop()


# -- plugin files through the store ------------------------------------------------------

_LIB = "linux/amd64/filer.so"
_DATA = b"\x7fELF a plugin library, as far as the store cares"


def _replica(tmp_path: Path, name: str, dsn: str) -> tuple[PgConfigStore, Path]:
    """A replica in a dir of its own, whose file pins `filer` to _DATA (so that it takes
    the stored file), and where that file lies in its plugins dir once taken."""
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    pin = {"enabled": False, "sha256": sha256_hex(_DATA)}
    return _store(root, name, dsn, {"filer": pin}), root / "plugins" / _LIB


Held = tuple[PgConfigStore, Path]  # a replica, and where filer's file lies in its dir


def _published_and_taken(tmp_path: Path, dsn: str) -> tuple[Held, Held]:
    """Replica "one" publishes filer's file (placed in its dir, as an upload does), and
    "two" starts and takes it."""
    one, one_file = _replica(tmp_path, "one", dsn)
    one_file.parent.mkdir(parents=True)
    one_file.write_bytes(_DATA)
    one.publish_file("filer", _LIB, _DATA, None)
    two, two_file = _replica(tmp_path, "two", dsn)
    assert two_file.read_bytes() == _DATA, "the second replica took the stored file"
    return (one, one_file), (two, two_file)


def test_a_plugin_deleted_on_one_replica_loses_its_file_on_the_others(
    tmp_path: Path, database: str
) -> None:
    (one, one_file), (two, two_file) = _published_and_taken(tmp_path, database)
    changed = threading.Event()
    two.start(changed.set)
    try:
        wait_until(lambda: two.status.connected, timeout=5)
        one_file.unlink()  # as HostService.delete does on its own replica, then:
        one.forget_file("filer")
        assert changed.wait(5), "the second replica did not hear of the delete"
        wait_until(lambda: not two_file.exists(), timeout=5)
    finally:
        two.stop()
    # A replica started afterwards finds nothing to take.
    _three, three_file = _replica(tmp_path, "three", database)
    assert not three_file.exists()
    one.forget_file("filer")  # twice is fine


def test_a_replica_down_during_a_delete_drops_the_file_when_it_starts(
    tmp_path: Path, database: str
) -> None:
    (one, _), (_, two_file) = _published_and_taken(tmp_path, database)
    # "two" stops; meanwhile the plugin is deleted; "two" starts again from its state dir.
    one.forget_file("filer")
    _replica(tmp_path, "two", database)
    assert not two_file.exists()


def test_a_file_replaced_by_hand_stays_when_the_plugin_is_deleted_elsewhere(
    tmp_path: Path, database: str
) -> None:
    (one, _), (_, two_file) = _published_and_taken(tmp_path, database)
    two_file.write_bytes(b"the operator's own build")
    one.forget_file("filer")
    _replica(tmp_path, "two", database)
    assert two_file.read_bytes() == b"the operator's own build"
