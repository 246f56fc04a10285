"""No window between check and load: the bytes verified are the bytes loaded, from memory,
in this process and in an isolated worker."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
from pathlib import Path

import orjson
import pytest

from cliproxy_host import errors
from cliproxy_host.abi import HostHandler
from cliproxy_host.backends.isolated.client import IsolatedPlugin
from cliproxy_host.backends.isolated.limits import IsolationLimits
from cliproxy_host.backends.native import NativePlugin
from cliproxy_host.envelope import ok
from cliproxy_host.host.facade import PluginHost
from cliproxy_host.trust import TrustPolicy, verify_file

from ..conftest import HostFactory

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="memfd and /proc are Linux's")

answer_ok: HostHandler = lambda plugin_id, method, request: ok({})  # noqa: E731


def identifier(plugin: NativePlugin | IsolatedPlugin) -> str:
    answer = orjson.loads(plugin.call("executor.identifier", b"{}"))
    return str(answer["result"]["identifier"])


def mappings(pid: int | str = "self") -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_the_verified_bytes_are_loaded_not_what_the_file_holds_by_then(
    testplugin: Path, impostor: Path, tmp_path: Path
) -> None:
    path = tmp_path / "tp.so"
    shutil.copyfile(testplugin, path)
    pin = hashlib.sha256(path.read_bytes()).hexdigest()
    image, verdict = verify_file(path, TrustPolicy(sha256=pin), plugin_id="tp")
    assert verdict.sha256 == pin
    shutil.copyfile(impostor, path)  # swapped between the check and the load
    plugin = NativePlugin("tp", path, answer_ok, image=image)
    try:
        assert identifier(plugin) == "testplugin"
        assert str(plugin.load_path).startswith("/proc/self/fd/")
        assert f"/memfd:{path.name}" in mappings()
        assert str(path) not in mappings()
        # Sealed: not even this process can change the image under the loaded library.
        fd = os.open(plugin.load_path, os.O_WRONLY)
        try:
            with pytest.raises(PermissionError) as refused:
                os.write(fd, b"\0")
        finally:
            os.close(fd)
        assert refused.value.errno == errno.EPERM
    finally:
        plugin.close()
    assert f"/memfd:{path.name}" not in mappings()  # unloaded, and its memfd closed


def test_a_worker_refuses_bytes_other_than_the_ones_the_host_verified(
    testplugin: Path, impostor: Path, tmp_path: Path
) -> None:
    path = tmp_path / "tp.so"
    shutil.copyfile(impostor, path)  # the file changed after the host hashed testplugin
    verified = hashlib.sha256(testplugin.read_bytes()).hexdigest()
    actual = hashlib.sha256(impostor.read_bytes()).hexdigest()
    with pytest.raises(errors.ChecksumMismatch) as refused:
        IsolatedPlugin("tp", path, answer_ok, IsolationLimits(sha256=verified))
    assert f"sha256 mismatch: verified {verified}, file {actual}" in refused.value.message
    assert refused.value.plugin_id == "tp"


def test_an_isolated_pinned_plugin_runs_from_memory_in_its_worker(
    testplugin: Path, host_factory: HostFactory
) -> None:
    installed = host_factory.add("tp", testplugin)
    pin = hashlib.sha256(installed.read_bytes()).hexdigest()
    host_factory.write_config({"tp": {"enabled": True, "isolation": "process", "sha256": pin}})
    with PluginHost.from_config(host_factory.config_path) as host:
        worker = host.call("tp", "pid", {})["pid"]
        maps = mappings(worker)
        assert f"/memfd:{installed.name}" in maps
        assert str(installed) not in maps
        # A restarted worker loads the verified bytes again.
        with pytest.raises(errors.PluginCrashed):
            host.call("tp", "segfault", {})
        assert host.call("tp", "echo", {"back": 1}) == {"back": 1}


def test_a_plugin_without_checks_is_loaded_from_its_path_as_before(
    testplugin: Path, host_factory: HostFactory
) -> None:
    installed = host_factory.add("tp", testplugin)
    host_factory.write_config({"tp": {"enabled": True}})
    with PluginHost.from_config(host_factory.config_path) as host:
        assert host.call("tp", "echo", {}) == {}
        assert str(installed) in mappings()
