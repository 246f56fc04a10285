"""Config and plugin-dir problems get an answer: an error naming the path, a warning, a
reason in the listing; a running server keeps the config in force that it can use."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cliproxy_host import errors
from cliproxy_host.cli import main
from cliproxy_host.config import ConfigError
from cliproxy_host.host.facade import PluginHost
from cliproxy_host.host.service import HostService
from cliproxy_host.management.plugin_routes import PluginRoutes
from cliproxy_host.management.routers.plugin_config import check_plugin_settings
from cliproxy_host.management.views import plugin_list

from ..conftest import HostFactory
from ..serverutil import run_server, wait_until


@pytest.fixture
def service(examples: dict[str, Path], host_factory: HostFactory) -> Iterator[HostService]:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True, "mode": "safe"}})
    running = HostService(host_factory.config_path)
    running.start()
    try:
        assert running.wait_ready(30)
        assert running.host.registration("simple-c") is not None
        yield running
    finally:
        running.stop()


def _break_dir(plugins_dir: Path, how: str) -> None:
    shutil.rmtree(plugins_dir)
    if how == "file":
        plugins_dir.write_text("not a directory\n")


# -- 1. a plugins dir that is missing or a file ------------------------------------------


@pytest.mark.parametrize(("how", "says"), [("missing", "does not exist"), ("file", "not a dir")])
def test_an_unusable_plugins_dir_is_a_config_error_and_the_cli_exits_2(
    host_factory: HostFactory, how: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    host_factory.write_config(configs={})
    _break_dir(host_factory.plugins_dir, how)
    with pytest.raises(ConfigError) as refused:
        PluginHost.from_config(host_factory.config_path)
    assert str(host_factory.plugins_dir) in str(refused.value)
    assert says in str(refused.value)
    with pytest.raises(ConfigError):
        HostService(host_factory.config_path)  # `serve` maps this to exit 2 too
    assert main(["plugins", "--config", str(host_factory.config_path)]) == 2
    assert str(host_factory.plugins_dir) in capsys.readouterr().err


@pytest.mark.parametrize("how", ["missing", "file"])
def test_a_running_server_keeps_its_plugins_when_the_dir_becomes_unusable(
    service: HostService, host_factory: HostFactory, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _break_dir(host_factory.plugins_dir, how)
    wait_until(lambda: service.host.plugins_dir_error is not None)
    assert str(host_factory.plugins_dir) in (service.host.plugins_dir_error or "")
    assert service.host.call("simple-c", "executor.identifier", {}) == {"identifier": "simple-c"}
    assert any(
        r.levelno == logging.ERROR and str(host_factory.plugins_dir) in r.getMessage()
        for r in caplog.records
    )
    routes = PluginRoutes(service.host, lambda method, path: False)
    listing = plugin_list(service, routes, None)
    assert listing.plugins_dir_error == service.host.plugins_dir_error
    # An edit of the config while the dir is unusable is not applied either.
    service.config_path.write_text(service.config_path.read_text().replace("safe", "fast"))
    wait_until(lambda: "fast" in service.store.config.plugin_entry("simple-c").settings["mode"])
    assert service.host.registration("simple-c") is not None


# -- 2. an empty config.yaml -------------------------------------------------------------


def test_an_empty_config_saved_into_a_running_server_warns_and_lists_why(
    service: HostService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    service.config_path.write_text("")
    wait_until(lambda: service.host.registration("simple-c") is None)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        str(service.config_path) in m and "plugins.enabled" in m and "defaults to false" in m
        for m in warned
    ), warned
    info = service.host.plugin("simple-c")
    assert info is not None
    assert "plugins.enabled is not set and defaults to false" in (info.error or "")


def test_the_plugins_table_says_why_nothing_loads(
    examples: dict[str, Path],
    host_factory: HostFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.config_path.write_text("")
    monkeypatch.setenv("COLUMNS", "60")  # a narrow terminal cuts the ERROR cells short
    assert main(["plugins", "--config", str(host_factory.config_path)]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines()[:2])) <= 60
    assert "plugins.enabled is not set and defaults to false" in out.splitlines()[-1]


# -- 4. ConfigFields: the same rule for the file as for the API ---------------------------


def test_a_hand_edit_breaking_config_fields_keeps_the_previous_config(
    service: HostService, caplog: pytest.LogCaptureFixture
) -> None:
    before = service.host.plugin("simple-c")
    assert before is not None
    service.config_path.write_text(service.config_path.read_text().replace("safe", "turbo"))
    wait_until(lambda: (service.host.plugin("simple-c") or before).error is not None)
    info = service.host.plugin("simple-c")
    assert info is not None
    assert "plugins.configs.simple-c.mode" in (info.error or "")
    assert "previous config kept" in (info.error or "")
    assert info.registered
    wait_until(
        lambda: any(
            r.levelno == logging.ERROR and "plugins.configs.simple-c.mode" in r.getMessage()
            for r in caplog.records
        )
    )


def test_a_config_breaking_config_fields_is_refused_on_load(
    examples: dict[str, Path], host_factory: HostFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True, "mode": "turbo"}})
    with PluginHost.from_config(host_factory.config_path) as host:
        info = host.plugin("simple-c")
        assert info is not None
        assert not info.registered
        assert "plugins.configs.simple-c.mode" in (info.error or "")
    assert (
        main(["call", "simple-c", "executor.identifier", "--config", str(host_factory.config_path)])
        == 2
    )
    assert "plugins.configs.simple-c.mode" in capsys.readouterr().err


def test_a_disabled_plugins_config_is_checked_against_the_fields_it_declared(
    service: HostService, caplog: pytest.LogCaptureFixture
) -> None:
    service.replace_config("simple-c", {"enabled": False, "mode": "safe"})
    assert service.host.registration("simple-c") is None
    caplog.set_level(logging.WARNING)
    service.config_path.write_text(service.config_path.read_text().replace("safe", "turbo"))

    def listed_error() -> str:
        info = service.host.plugin("simple-c")
        return (info.error or "") if info else ""

    wait_until(lambda: "plugins.configs.simple-c.mode" in listed_error())
    assert "ConfigFields" in listed_error()
    assert any(
        r.levelno == logging.WARNING and "plugins.configs.simple-c.mode" in r.getMessage()
        for r in caplog.records
    )
    # The same rule from the API: a disabled plugin's PUT is checked before anything is written.
    before = service.config_path.read_bytes()
    with pytest.raises(errors.InvalidConfig) as refused:
        check_plugin_settings(service, "simple-c", {"enabled": False, "mode": "warp"})
    assert "plugins.configs.simple-c.mode" in refused.value.message
    assert service.config_path.read_bytes() == before


def test_a_disabled_plugins_put_is_refused_over_http(
    examples: dict[str, Path], host_factory: HostFactory
) -> None:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True, "mode": "safe"}})
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        url = "/v0/management/plugins/simple-c/config"
        assert running.client.put(url, json={"enabled": False, "mode": "safe"}).status_code == 200
        before = host_factory.config_path.read_bytes()
        answer = running.client.put(url, json={"enabled": False, "mode": "turbo"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_config"
        assert "plugins.configs.simple-c.mode" in answer.json()["message"]
        assert host_factory.config_path.read_bytes() == before


# -- 5. PUT without `enabled` -------------------------------------------------------------


def test_put_without_enabled_never_disables_silently(service: HostService) -> None:
    before = service.config_path.read_bytes()
    with pytest.raises(errors.InvalidConfig) as refused:
        service.replace_config("simple-c", {"mode": "fast"})
    assert "plugins.configs.simple-c.enabled" in refused.value.message
    assert service.config_path.read_bytes() == before
    assert service.host.registration("simple-c") is not None
    # Said out loud, it is done; a disabled plugin stays disabled without it.
    service.replace_config("simple-c", {"enabled": False, "mode": "fast"})
    assert service.host.registration("simple-c") is None
    service.replace_config("simple-c", {"mode": "safe"})
    assert not service.config.plugin_entry("simple-c").enabled


# -- 6. a failed write names the config file ----------------------------------------------


def test_a_failed_write_names_the_config_file(
    service: HostService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def immutable(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted", src, dst)

    monkeypatch.setattr("cliproxy_host.config.files.os.replace", immutable)
    with pytest.raises(errors.ConfigSaveFailed) as failed:
        service.patch_config("simple-c", {"mode": "fast"})
    assert str(service.config_path) in failed.value.message
    assert ".tmp" not in failed.value.message
    assert [p.name for p in service.config_path.parent.iterdir() if p.suffix == ".tmp"] == []
