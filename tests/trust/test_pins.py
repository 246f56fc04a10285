"""sha256 pins: `plugins.configs.<id>.sha256`, checked on the bytes that are loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cliproxy_host import errors
from cliproxy_host.cli import main
from cliproxy_host.config import HostConfig
from cliproxy_host.errors import ConfigError
from cliproxy_host.host.facade import PluginHost

from ..conftest import HostFactory
from .conftest import flip_byte

MODES = ["inprocess", "process"]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("isolation", MODES)
def test_a_plugin_whose_file_has_the_pinned_digest_loads_and_answers(
    testplugin: Path, host_factory: HostFactory, isolation: str
) -> None:
    installed = host_factory.add("tp", testplugin)
    pin = sha256_of(installed).upper()  # either case is accepted
    host_factory.write_config({"tp": {"enabled": True, "isolation": isolation, "sha256": pin}})
    with PluginHost.from_config(host_factory.config_path) as host:
        [info] = host.plugins()
        assert (info.registered, info.error) == (True, None)
        assert (info.sha256, info.signed_by) == (pin.lower(), None)
        assert host.call("tp", "echo", {"pinned": True}) == {"pinned": True}


@pytest.mark.parametrize("isolation", MODES)
def test_a_flipped_byte_is_refused_with_the_sha256_mismatch_error(
    testplugin: Path, host_factory: HostFactory, isolation: str
) -> None:
    installed = host_factory.add("tp", testplugin)
    pin = sha256_of(installed)
    flip_byte(installed)
    actual = sha256_of(installed)
    host_factory.write_config({"tp": {"enabled": True, "isolation": isolation, "sha256": pin}})
    with PluginHost.from_config(host_factory.config_path) as host:
        [info] = host.plugins()
        assert not info.registered
        assert info.error is not None
        assert f"sha256 mismatch: config {pin}, file {actual}" in info.error
        assert "plugin tp" in info.error
        assert str(installed) in info.error
        assert errors.ChecksumMismatch.code in info.error
        with pytest.raises(errors.PluginNotLoaded) as refused:
            host.call("tp", "echo", {})
        assert "sha256 mismatch" in refused.value.message


def test_the_mismatch_shows_in_the_management_list_and_the_plugins_table(
    testplugin: Path, host_factory: HostFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    installed = host_factory.add("tp", testplugin)
    host_factory.write_config({"tp": {"enabled": True, "sha256": "0" * 64}})
    actual = sha256_of(installed)
    assert main(["plugins", "--config", str(host_factory.config_path), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["plugins"]
    assert f"sha256 mismatch: config {'0' * 64}, file {actual}" in entry["error"]
    assert (entry["sha256"], entry["signed_by"]) == (None, None)  # nothing loaded
    assert main(["plugins", "--config", str(host_factory.config_path), "--wide"]) == 0
    table = " ".join(capsys.readouterr().out.split())  # rich wraps long cells
    assert "sha256 mismatch" in table
    assert actual[:16] in table.replace(" ", "")


def test_a_new_pin_in_the_config_loads_the_plugin_refused_before(
    testplugin: Path, host_factory: HostFactory
) -> None:
    installed = host_factory.add("tp", testplugin)
    host_factory.write_config({"tp": {"enabled": True, "sha256": "f" * 64}})
    with PluginHost.from_config(host_factory.config_path) as host:
        assert not host.plugins()[0].registered
        host_factory.write_config({"tp": {"enabled": True, "sha256": sha256_of(installed)}})
        host.apply(HostConfig.load(host_factory.config_path))
        assert host.call("tp", "echo", {"n": 1}) == {"n": 1}
        # A pin that no longer fits the loaded file unloads it.
        host_factory.write_config({"tp": {"enabled": True, "sha256": "e" * 64}})
        host.apply(HostConfig.load(host_factory.config_path))
        [info] = host.plugins()
        assert not info.registered
        assert info.error is not None
        assert "sha256 mismatch" in info.error


@pytest.mark.parametrize("bad", ["abc", "g" * 64, "0" * 63, "sha256:" + "0" * 64, 7])
def test_a_pin_that_is_no_hex_digest_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"plugins\.configs\.tp\.sha256: expected"):
        HostConfig.from_mapping({"plugins": {"configs": {"tp": {"sha256": bad}}}})


def test_check_prints_the_digest_of_the_file(
    testplugin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(testplugin)]) == 0
    out = capsys.readouterr().out
    assert f"sha256: {sha256_of(testplugin)}  {testplugin}" in out
    assert f".sha256: {sha256_of(testplugin)}" in out
