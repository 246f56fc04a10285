"""HostService: a write through it is applied once, though the watcher sees the write too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cliproxy_host import errors
from cliproxy_host.host.service import HostService

from ..conftest import HostFactory
from ..serverutil import wait_until
from .apply_counter import ApplyCounter


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> ApplyCounter:
    return ApplyCounter(monkeypatch)


@pytest.fixture
def service(
    examples: dict[str, Path], host_factory: HostFactory, counter: ApplyCounter
) -> Iterator[HostService]:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True, "mode": "safe"}})
    running = HostService(host_factory.config_path)
    running.start()
    try:
        assert running.wait_ready(30)
        counter.reset()
        yield running
    finally:
        running.stop()


def test_a_config_write_is_applied_once(service: HostService, counter: ApplyCounter) -> None:
    service.patch_config("simple-c", {"mode": "fast"})
    assert counter.applies == 1
    # The watcher has seen the service's own write by now, and applied nothing for it.
    wait_until(counter.saw_config_write)
    assert counter.applies == 1


def test_a_hand_edit_after_a_write_is_still_applied_once(
    service: HostService, counter: ApplyCounter
) -> None:
    service.set_enabled("simple-c", False)
    wait_until(counter.saw_config_write)
    counter.reset()
    # Saved the way many editors save: a new file renamed over the old one, one event.
    edited = service.config_path.with_name("edited.yaml")
    edited.write_text(service.config_path.read_text().replace("enabled: false", "enabled: true"))
    edited.replace(service.config_path)
    wait_until(counter.saw_config_write)
    assert counter.applies == 1
    assert service.host.call("simple-c", "executor.identifier", {}) == {"identifier": "simple-c"}


def test_a_delete_is_applied_once(service: HostService, counter: ApplyCounter) -> None:
    info = service.host.plugin("simple-c")
    assert info is not None
    assert info.path is not None
    library = Path(info.path)
    done = service.delete("simple-c")
    assert done.files == [library]
    assert counter.applies == 1
    # Both echoes: the config entry it dropped and the library it removed.
    wait_until(lambda: counter.saw_config_write() and counter.saw_file(library))
    assert counter.applies == 1
    assert service.host.plugin("simple-c") is None


def test_store_failures_are_raised_as_the_error_tree(
    service: HostService, counter: ApplyCounter
) -> None:
    service.config_path.write_text("plugins: [not, a, mapping]\n")
    with pytest.raises(errors.InvalidConfig) as invalid:
        service.patch_config("simple-c", {"mode": "fast"})
    assert invalid.value.http_status == 400
    with pytest.raises(errors.InvalidPluginId):
        service.patch_config("../x", {})
    assert counter.applies == 0


def test_a_failed_save_is_config_save_failed(
    service: HostService, counter: ApplyCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(service.config_path))

    monkeypatch.setattr("cliproxy_host.config.schema.os.replace", refuse)
    with pytest.raises(errors.ConfigSaveFailed) as failed:
        service.set_enabled("simple-c", False)
    assert failed.value.http_status == 500
    assert failed.value.message == f"Permission denied: {service.config_path}"
    assert counter.applies == 0


def test_exists_and_plugin_look_up_one_id(service: HostService) -> None:
    listed = {info.id: info for info in service.host.plugins()}
    for pid, info in listed.items():
        assert service.host.plugin(pid) == info
        assert service.exists(pid)
    assert service.host.plugin("ghost") is None
    assert not service.exists("ghost")
