"""`cliproxy-host store list` and `cliproxy-host store install <id> [--version V]`."""

from __future__ import annotations

import orjson
import pytest

from cliproxy_host.cli import main

from ..conftest import HostFactory
from .conftest import EXT, GOARCH, GOOS, Store, disk_state, store_config
from .test_install import entry_of


def test_store_list_prints_what_the_sources_offer(
    store: Store, host_factory: HostFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    store.direct("sp")
    config = store_config(host_factory, [store.url, "http://127.0.0.1:9/none.json"])
    assert main(["store", "list", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert out.split()[:4] == ["sp", "2.0.0", "installed:", "-"]
    assert "cannot read http://127.0.0.1:9/none.json" in err
    assert main(["store", "list", "--json", "--config", str(config)]) == 0
    body = orjson.loads(capsys.readouterr().out)
    assert [p["store_id"] for p in body["plugins"]] == [f"{body['sources'][0]['id']}/sp"]


def test_store_install_writes_the_file_and_the_config(
    store: Store,
    host_factory: HostFactory,
    libraries: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    store.direct("sp")
    config = store_config(host_factory, [store.url])
    assert main(["store", "install", "sp", "--version", "1.1.0", "--config", str(config)]) == 0
    target = host_factory.plugins_dir / GOOS / GOARCH / f"sp-v1.1.0{EXT}"
    assert target.read_bytes() == libraries["1.1.0"]
    assert f"installed sp 1.1.0 at {target} (isolation: process)" in capsys.readouterr().out
    entry = entry_of(config, "sp")
    assert (entry["enabled"], entry["isolation"], entry["store"]["version"]) == (
        True,
        "process",
        "1.1.0",
    )


def test_store_install_failures_exit_1_and_say_why(
    store: Store, host_factory: HostFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    store.direct("sp", ("1.0.0",), sha="0" * 64)
    config = store_config(host_factory, [store.url])
    before = disk_state(host_factory.plugins_dir), config.read_bytes()
    assert main(["store", "install", "sp", "--config", str(config)]) == 1
    assert "plugin_install_failed: sp: sha256 mismatch" in capsys.readouterr().err
    assert (disk_state(host_factory.plugins_dir), config.read_bytes()) == before
    assert main(["store", "install", "sp", "--version", "3", "--config", str(config)]) == 1
    assert "plugin_manifest_invalid" in capsys.readouterr().err
