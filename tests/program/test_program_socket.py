"""plugins.socket: programs started elsewhere connect with their plugin's token."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import orjson
import pytest

from cliproxy_host.errors import ConfigError
from cliproxy_host.host.facade import PluginHost

from ..conftest import HostFactory
from ..serverutil import wait_until

KNOBS = Path(__file__).resolve().parents[1] / "plugins" / "programs" / "knobs.py"
TOKEN = "s3cret-token-for-ext"


@pytest.fixture
def host(testplugin: Path, host_factory: HostFactory) -> Iterator[PluginHost]:
    host_factory.add("tp", testplugin)
    (host_factory.root / "other.token").write_text("other-token\n")
    host_factory.write_config(
        configs={
            "ext": {"enabled": True, "token": TOKEN, "priority": 5},
            "other": {"enabled": True, "token_file": "other.token"},
            "tp": {"enabled": True},
        },
        extra={},
    )
    text = host_factory.config_path.read_text()
    host_factory.config_path.write_text(
        text.replace("plugins:\n", "plugins:\n  socket: run/plugins.sock\n", 1)
    )
    with PluginHost.from_config(host_factory.config_path) as running:
        yield running


def sock_path(host_factory: HostFactory) -> Path:
    return host_factory.root / "run" / "plugins.sock"


def start_program(
    host_factory: HostFactory, plugin_id: str, token: str | None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPROXY_")}
    env.update(CLIPROXY_PLUGIN_ID=plugin_id, CLIPROXY_PLUGIN_SOCKET=str(sock_path(host_factory)))
    if token is not None:
        env["CLIPROXY_PLUGIN_TOKEN"] = token
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(root)
    script = host_factory.root / "knobs.py"
    shutil.copy(KNOBS, script)
    return subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)


def loaded(host: PluginHost, plugin_id: str) -> bool:
    info = host.plugin(plugin_id)
    return info is not None and info.registered


def test_the_socket_is_private_and_a_plugin_waits_for_its_program(
    host: PluginHost, host_factory: HostFactory
) -> None:
    mode = sock_path(host_factory).stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    info = host.plugin("ext")
    assert info is not None
    assert not info.registered
    assert "waiting for its program to connect to plugins.socket" in (info.error or "")
    assert host.call("tp", "echo", {"a": 1}) == {"a": 1}


def test_a_program_started_elsewhere_connects_with_its_token_and_serves(
    host: PluginHost, host_factory: HostFactory
) -> None:
    program = start_program(host_factory, "ext", TOKEN)
    try:
        wait_until(lambda: loaded(host, "ext"), timeout=20)
        assert host.dispatch("executor.identifier", {}) == {"identifier": "knobs"}
        assert host.call("ext", "pid", {})["pid"] == program.pid
        info = host.plugin("ext")
        assert info is not None
        assert info.isolation == "program"
        # It goes away and comes back: the plugin takes the new connection.
        program.kill()
        program.wait(5)
        program = start_program(host_factory, "ext", TOKEN)
        wait_until(lambda: _pid(host) == program.pid, timeout=20)
    finally:
        program.kill()
        program.wait(5)


def _pid(host: PluginHost) -> int | None:
    try:
        return int(host.call("ext", "pid", {})["pid"])
    except Exception:
        return None


def test_the_token_file_is_read_for_its_plugin(host: PluginHost, host_factory: HostFactory) -> None:
    program = start_program(host_factory, "other", "other-token")
    try:
        wait_until(lambda: loaded(host, "other"), timeout=20)
    finally:
        program.kill()
        program.wait(5)


@pytest.mark.parametrize(
    ("plugin_id", "token", "reason"),
    [
        ("ext", None, "wrong or missing token for plugin ext"),
        ("ext", "guess", "wrong or missing token for plugin ext"),
        ("ext", "other-token", "wrong or missing token for plugin ext"),  # another ID's token
        ("tp", TOKEN, "plugin ID 'tp' has no token in the config"),
    ],
)
def test_a_connection_without_the_right_token_is_refused(
    host: PluginHost,
    host_factory: HostFactory,
    caplog: pytest.LogCaptureFixture,
    *,
    plugin_id: str,
    token: str | None,
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="cliproxy_host.backends.program.listener")
    program = start_program(host_factory, plugin_id, token)
    try:
        assert program.wait(20) != 0
        assert program.stderr is not None
        assert reason in program.stderr.read().decode()
    finally:
        program.kill()
    assert any(reason in r.getMessage() for r in caplog.records)
    assert not loaded(host, "ext")
    assert host.call("tp", "echo", {"a": 1}) == {"a": 1}


def test_a_connection_that_says_nothing_or_garbage_is_closed(
    host: PluginHost, host_factory: HostFactory
) -> None:
    with socket.socket(socket.AF_UNIX) as silent, socket.socket(socket.AF_UNIX) as noisy:
        silent.connect(str(sock_path(host_factory)))
        noisy.connect(str(sock_path(host_factory)))
        noisy.sendall(b"\xff garbage\n")
        noisy.settimeout(5)
        answer = orjson.loads(noisy.recv(4096))
        assert "not JSON" in answer["error"]["message"]
        silent.settimeout(10)
        assert b"rpc.hello within 5 s" in silent.recv(4096)
    assert host.call("tp", "echo", {"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    ("entry", "secret", "env_key", "named"),
    [
        ({"token": TOKEN}, TOKEN, None, "plugins.configs.ext.token: plugin ext's token is"),
        (
            {"token_file": "ext.token"},
            bcrypt.hashpw(TOKEN.encode(), bcrypt.gensalt(4)).decode(),
            None,
            "plugins.configs.ext.token_file (",
        ),
        ({"token": TOKEN}, "another-key", TOKEN, "(CLIPROXY_MANAGEMENT_KEY)"),
    ],
    ids=["token-plaintext-key", "token-file-hashed-key", "token-env-key"],
)
def test_a_token_that_is_the_management_key_is_refused_at_load(
    host_factory: HostFactory,
    monkeypatch: pytest.MonkeyPatch,
    *,
    entry: dict[str, str],
    secret: str,
    env_key: str | None,
    named: str,
) -> None:
    if env_key is None:
        monkeypatch.delenv("CLIPROXY_MANAGEMENT_KEY", raising=False)
    else:
        monkeypatch.setenv("CLIPROXY_MANAGEMENT_KEY", env_key)
    (host_factory.root / "ext.token").write_text(f"{TOKEN}\n")
    host_factory.write_config(
        configs={"ext": {"enabled": True, **entry}},
        extra={"remote-management": {"secret-key": secret}},
    )
    text = host_factory.config_path.read_text()
    host_factory.config_path.write_text(
        text.replace("plugins:\n", "plugins:\n  socket: run/plugins.sock\n", 1)
    )
    with pytest.raises(ConfigError, match="is the management key") as refused:
        PluginHost.from_config(host_factory.config_path).close()
    assert named in str(refused.value)
    assert "give the plugin a token of its own" in str(refused.value)
