"""Every size a config file or a management request controls is bounded, and a value over
a bound is a ConfigError naming the key and the bound (config/schema.py's MAX_* constants)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host.config import ConfigError, ConfigStore, HostConfig
from cliproxy_host.config.schema import (
    MAX_CONFIG_FILE_BYTES,
    MAX_NESTING_DEPTH,
    MAX_PLUGIN_ENTRIES,
    MAX_PLUGIN_SETTINGS_BYTES,
    MAX_STRING_CHARS,
)

from ..conftest import HostFactory
from ..serverutil import run_server


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _refused(path: Path) -> str:
    """The message of the ConfigError both readers of the file raise, the same."""
    with pytest.raises(ConfigError) as loaded:
        HostConfig.load(path)
    with pytest.raises(ConfigError) as stored:
        ConfigStore(path)
    assert str(loaded.value) == str(stored.value)
    return str(loaded.value)


def _nested(depth: int) -> str:
    """`plugins.configs.x.deep` holding lists nested so that the document has `depth` levels."""
    inner = depth - 4  # the top mapping, plugins, configs and x's entry are four
    return "plugins:\n  configs:\n    x:\n      deep: " + "[" * inner + "1" + "]" * inner + "\n"


def test_a_config_file_over_the_size_limit_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"# " + b"x" * MAX_CONFIG_FILE_BYTES + b"\n")
    message = _refused(path)
    assert str(path) in message
    assert str(MAX_CONFIG_FILE_BYTES) in message


def test_a_config_file_at_the_depth_limit_loads(tmp_path: Path) -> None:
    config = HostConfig.load(_write(tmp_path, _nested(MAX_NESTING_DEPTH)))
    assert config.plugin_entry("x").settings["deep"]


@pytest.mark.parametrize("depth", [MAX_NESTING_DEPTH + 1, 1000, 1_000_000])
def test_a_config_nested_too_deep_is_a_config_error(tmp_path: Path, depth: int) -> None:
    # 1000 levels overflowed ruamel's recursive composer with a RecursionError; its scanner
    # slows down quadratically with the depth (800 levels: 2 s), so the refusal is timed.
    path = _write(tmp_path, _nested(depth))
    started = time.monotonic()
    message = _refused(path)
    assert time.monotonic() - started < 15
    assert str(path) in message
    assert "nested" in message
    assert str(MAX_NESTING_DEPTH) in message


def test_a_string_over_the_limit_is_refused_naming_its_key(tmp_path: Path) -> None:
    ok = "y" * MAX_STRING_CHARS
    assert HostConfig.load(_write(tmp_path, f"plugins:\n  configs:\n    x:\n      s: {ok}\n"))
    path = _write(tmp_path, f"plugins:\n  configs:\n    x:\n      s: {ok}y\n")
    message = _refused(path)
    assert "plugins.configs.x.s" in message
    assert str(MAX_STRING_CHARS) in message


def test_a_key_over_the_string_limit_is_refused(tmp_path: Path) -> None:
    # An explicit key (`? `): a plain implicit key is limited to 1024 characters by YAML.
    path = _write(tmp_path, f"other-program:\n  ? {'k' * (MAX_STRING_CHARS + 1)}\n  : 1\n")
    assert str(MAX_STRING_CHARS) in _refused(path)


def test_an_integer_too_long_for_python_is_a_config_error(tmp_path: Path) -> None:
    # ruamel raised ValueError (Python's 4300-digit limit of int(str)).
    path = _write(tmp_path, f"plugins:\n  configs:\n    x:\n      n: {'9' * 5000}\n")
    message = _refused(path)
    assert str(path) in message
    assert "4300 digits" in message


def test_too_many_plugin_entries_are_refused(tmp_path: Path) -> None:
    entries = "".join(f"    p{i}: {{}}\n" for i in range(MAX_PLUGIN_ENTRIES + 1))
    message = _refused(_write(tmp_path, "plugins:\n  configs:\n" + entries))
    assert "plugins.configs" in message
    assert str(MAX_PLUGIN_ENTRIES) in message
    entries = "".join(f"    p{i}: {{}}\n" for i in range(MAX_PLUGIN_ENTRIES))
    assert len(
        HostConfig.load(_write(tmp_path, "plugins:\n  configs:\n" + entries)).plugins.configs
    )


def _big_settings(total: int) -> dict[str, Any]:
    """Settings of about `total` bytes in values of 30000 characters each."""
    return {f"k{i}": "v" * 30_000 for i in range(total // 30_000 + 1)}


def test_a_plugin_whose_settings_are_too_large_is_refused_naming_it(tmp_path: Path) -> None:
    values = "".join(
        f"      {k}: {v}\n" for k, v in _big_settings(MAX_PLUGIN_SETTINGS_BYTES).items()
    )
    message = _refused(_write(tmp_path, "plugins:\n  configs:\n    x:\n" + values))
    assert "plugins.configs.x" in message
    assert str(MAX_PLUGIN_SETTINGS_BYTES) in message


def test_the_api_applies_the_same_limits_and_writes_nothing(
    examples: dict[str, Path], host_factory: HostFactory
) -> None:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True}})
    url = "/v0/management/plugins/simple-c/config"
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        before = host_factory.config_path.read_bytes()
        for method in ("PUT", "PATCH"):
            big = {"enabled": True, **_big_settings(MAX_PLUGIN_SETTINGS_BYTES)}
            long = {"enabled": True, "s": "y" * (MAX_STRING_CHARS + 1)}
            for body, says in ((big, MAX_PLUGIN_SETTINGS_BYTES), (long, MAX_STRING_CHARS)):
                response = running.client.request(method, url, json=body)
                assert response.status_code == 400, response.text[:300]
                answer = response.json()
                assert answer["error"] == "invalid_config"
                assert str(says) in answer["message"]
                assert host_factory.config_path.read_bytes() == before


def test_a_write_that_would_grow_the_file_past_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store's limit made small: a 4 MiB YAML file takes ruamel half a minute here.
    limit = 20_000
    monkeypatch.setattr("cliproxy_host.config.store.MAX_CONFIG_FILE_BYTES", limit)
    # Other programs' keys fill the file to just under the limit.
    path = _write(tmp_path, "".join(f"other{i}: {'z' * 1000}\n" for i in range(19)))
    store = ConfigStore(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError) as refused:
        store.patch_plugin_config("x", {"s": "y" * 2000})
    assert str(limit) in str(refused.value)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == before
    assert "x" not in store.config.plugins.configs
