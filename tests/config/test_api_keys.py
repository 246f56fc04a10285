"""`api-keys:`: the Go host's list of strings, or mappings limiting a key; errors name the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from cliproxy_host.config.schema import ClientKeyEntry, HostConfig
from cliproxy_host.errors import ConfigError


def test_api_keys_take_strings_and_limiting_mappings(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "api-keys:\n"
        "  - plain-key\n"
        "  - key: limited-key\n"
        "    plugins: [simple-c]\n"
        "    models: [m1]\n"
    )
    config = HostConfig.load(path)
    assert config.api_keys == [
        ClientKeyEntry(key="plain-key"),
        ClientKeyEntry(key="limited-key", plugins=["simple-c"], models=["m1"]),
    ]
    assert "plain-key" not in repr(config)
    assert "limited-key" not in repr(config)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("  - 3", "config.yaml:2: api-keys[0]: expected a key (a string) or a mapping"),
        ("  - ''", "config.yaml:2: api-keys[0].key: expected a non-empty string"),
        (
            "  - {key: k, plugin: [x]}",
            "api-keys[0].plugin: unknown key; expected one of: key, models, plugins",
        ),
    ],
)
def test_a_bad_api_keys_entry_is_named_with_its_line(
    tmp_path: Path, entry: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"api-keys:\n{entry}\n")
    with pytest.raises(ConfigError) as caught:
        HostConfig.load(path)
    assert message in str(caught.value)
