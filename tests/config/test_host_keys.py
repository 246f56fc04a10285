"""The keys of a plugin's entry the host owns: defined once, by PluginConfig's fields, and
known as such wherever a plugin's settings are checked."""

from __future__ import annotations

from typing import Any

import pytest

from cliproxy_host.config import HOST_KEYS, HostConfig, PluginConfig
from cliproxy_host.host.registry import ConfigField, check_settings

# A valid value for each host key, to read it from a config file.
SAMPLES: dict[str, Any] = {
    "enabled": True,
    "priority": 3,
    "store": {"version": "1.2.0"},
    "reload": "restart",
    "isolation": "process",
    "timeout_ms": 100,
    "max_concurrent_requests": 2,
    "max_response_bytes": 1024,
    "memory_limit_mb": 64,
    "cpu_limit_s": 5,
    "sha256": "0" * 64,
    "permissions": {"callbacks": ["host.log"]},
    "command": ["python3", "plugin.py"],
    "cwd": "plugins/mine",
    "env": {"MODE": "fast"},
    "token": "a-token",
    "token_file": "plugin.token",
}


def spelling(name: str) -> str:
    """How the file spells PluginConfig's field `name`."""
    info = PluginConfig.model_fields[name]
    return info.alias or name


def test_the_host_keys_are_plugin_configs_fields_as_the_file_spells_them() -> None:
    assert {spelling(name) for name in PluginConfig.model_fields} == HOST_KEYS
    assert {"enabled", "priority", "store", "reload", "isolation", "timeout_ms"} <= HOST_KEYS


@pytest.mark.parametrize("key", sorted(HOST_KEYS))
def test_a_host_key_in_the_file_is_the_hosts_and_not_a_plugin_setting(key: str) -> None:
    config = HostConfig.from_mapping({"plugins": {"configs": {"p": {key: SAMPLES[key]}}}})
    entry = config.plugin_entry("p")
    assert entry.settings == {}
    assert entry.as_mapping() == {key: SAMPLES[key]}


@pytest.mark.parametrize("name", list(PluginConfig.model_fields))
def test_check_settings_leaves_every_host_key_to_the_config_schema(name: str) -> None:
    # Every field of PluginConfig, so one added there without the registry knowing it fails
    # here: a plugin declaring a field of the same name must not get to judge the value.
    key = spelling(name)
    declared = [ConfigField(name=key, type="object")]
    assert check_settings(declared, {key: "not an object"}) == []


def test_check_settings_still_checks_the_plugins_own_fields() -> None:
    declared = [
        ConfigField(name="mode", type="enum", enumvalues=("safe", "fast")),
        ConfigField(name="retries", type="integer"),
    ]
    settings = {"enabled": True, "timeout_ms": 100, "mode": "wild", "retries": "3"}
    assert check_settings(declared, settings) == [
        "mode: expected one of safe, fast, got 'wild'",
        "retries: expected an integer, got '3'",
    ]


def test_config_yaml_always_holds_enabled_and_priority() -> None:
    assert PluginConfig(isolation="process").config_yaml() == (
        b"isolation: process\nenabled: false\npriority: 0\n"
    )
