"""A property of the config loader: any document either loads into a valid config or is a
ConfigError naming the file (and the key, when the YAML itself parses), never another
exception; a config that loads comes back the same after the writer rewrote the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cliproxy_host.config import ConfigError, ConfigStore, HostConfig

# Bounded and seeded: the same examples on every run, so CI is deterministic.
PROPERTY = settings(
    max_examples=200,
    deadline=5000,  # ms per example: a file is parsed, validated and written
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Keys the schema knows, near misses, and odd ones: empty, unicode, YAML-looking, long.
KEYS = st.one_of(
    st.sampled_from(
        [
            "plugins",
            "enabled",
            "dir",
            "configs",
            "priority",
            "store",
            "version",
            "reload",
            "isolation",
            "timeout-ms",
            "timeout_ms",
            "http",
            "allowed-hosts",
            "remote-management",
            "secret-key",
            "max-body-bytes",
            "simple-c",
            "x",
            "",
            " ",
            "ü-plug",
            "a:b",
            "- x",
            "#",
            "yes",
            "null",
            "1",
            "plugin/../etc",
        ]
    ),
    st.text(max_size=12),
    st.text(alphabet="abc-_.0123456789", min_size=1, max_size=140),
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(10**200), max_value=10**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["true", "no", "0x1F", "1e3", "~", "2026-02-30", "swap", "process", "-"]),
)

VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=30,
)


def _plugin_entry() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "enabled": st.one_of(st.booleans(), SCALARS),
            "priority": st.one_of(st.integers(min_value=-(2**64), max_value=2**64), SCALARS),
            "reload": st.sampled_from(["swap", "restart", "turbo"]),
            "isolation": st.sampled_from(["inprocess", "process", 1]),
            "timeout_ms": st.one_of(st.integers(min_value=-5, max_value=10**6), SCALARS),
            "store": st.one_of(st.fixed_dictionaries({"version": st.text(max_size=8)}), SCALARS),
            "mode": VALUES,
        },
    )


# Shaped like a config, so that most examples get past the YAML and into the schema.
CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        "plugins": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "enabled": st.just(False),  # true would read the plugins dir
                    "dir": st.one_of(st.text(max_size=10), SCALARS),
                    "configs": st.one_of(
                        st.dictionaries(KEYS, _plugin_entry(), max_size=4), SCALARS
                    ),
                    "timeout-ms": st.one_of(st.integers(min_value=-3, max_value=10**5), SCALARS),
                },
            ),
            VALUES,
        ),
        "http": st.one_of(st.dictionaries(KEYS, VALUES, max_size=3), SCALARS),
        "remote-management": st.one_of(
            st.fixed_dictionaries({}, optional={"max-body-bytes": SCALARS}), SCALARS
        ),
        "other-program": VALUES,
    },
)

# Raw text, for what a data generator never writes: anchors, tags, tabs, broken indentation.
FRAGMENTS = st.sampled_from(
    [
        "plugins:\n",
        "  enabled: false\n",
        "  configs:\n",
        "    x:\n",
        "      priority: 99999999999999999999999\n",
        "      mode: &a [1, 2]\n",
        "      again: *a\n",
        "      bad: *missing\n",
        "  - item\n",
        "\t tab: 1\n",
        "? [a, b]\n: c\n",
        "key: !!binary aGk=\n",
        "key: !!python/object:os.system x\n",
        "<<: {enabled: true}\n",
        "when: 2026-13-45\n",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        '"unterminated\n',
        "{a: [b, {c: d}]}\n",
        "ü: ✓\n",
        "\ufeff",
        "\x00\n",
        "n: " + "9" * 5000 + "\n",
        "deep: " + "[" * 60 + "]" * 60 + "\n",
    ]
)
RAW_TEXTS = st.lists(FRAGMENTS, max_size=8).map("".join)


def _write(folders: pytest.TempPathFactory, text: str) -> Path:
    # A folder of its own per example: tmp_path would be shared by all examples of a test.
    path = folders.mktemp("cfgprop") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _load_or_error(path: Path) -> HostConfig | ConfigError:
    """HostConfig.load's answer; the store must give the same one."""
    try:
        config: HostConfig | ConfigError = HostConfig.load(path)
    except ConfigError as exc:
        config = exc
    try:
        store_config: HostConfig | ConfigError = ConfigStore(path).config
    except ConfigError as exc:
        store_config = exc
    assert type(config) is type(store_config)
    if isinstance(config, ConfigError):
        assert str(config) == str(store_config)
    event(
        "refused" if isinstance(config, ConfigError) else "loaded"
    )  # --hypothesis-show-statistics
    return config


def _meaning(config: HostConfig) -> Any:
    """Everything a config says, comparable: sections, plugin entries, other keys."""
    return (
        config.model_dump(by_alias=True),
        {pid: config.config_yaml(pid) for pid in config.plugins.configs},
    )


def _keys_of(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {str(k) for k in value} | {k for v in value.values() for k in _keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys_of(v)}
    return set()


def _rewrite_keeps_meaning(path: Path, config: HostConfig) -> None:
    """The writer's round trip: a key added to a plugin and taken away again leaves a
    file written by the writer that means what the hand-written one meant."""
    store = ConfigStore(path)
    pid = next(iter(config.plugins.configs), "roundtrip-plugin")
    store.patch_plugin_config(pid, {"roundtrip-probe": 1})
    store.patch_plugin_config(pid, {"roundtrip-probe": None})
    again = HostConfig.load(path)
    if pid in config.plugins.configs:
        assert _meaning(again) == _meaning(config)
    else:
        # The entry the probe made stays behind, empty: the rest is unchanged.
        assert again.plugins.configs.pop(pid).as_mapping() == {}
        assert _meaning(again) == _meaning(config)


@PROPERTY
@given(CONFIGS)
def test_a_config_shaped_document_loads_or_names_the_key(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, Any]
) -> None:
    text = json.dumps(document)  # JSON is YAML (1.2); unicode as \\u escapes
    path = _write(tmp_path_factory, text)
    answer = _load_or_error(path)
    if isinstance(answer, ConfigError):
        message = str(answer)
        assert message.startswith(str(path))
        assert any(key and key in message for key in _keys_of(document) | {"top level"}), message
        return
    _rewrite_keeps_meaning(path, answer)


@pytest.mark.filterwarnings("ignore::ruamel.yaml.error.ReusedAnchorWarning")
@PROPERTY
@given(RAW_TEXTS)
def test_any_yamlish_text_loads_or_is_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = _write(tmp_path_factory, text)
    answer = _load_or_error(path)
    if isinstance(answer, ConfigError):
        assert str(answer).startswith(str(path))
        return
    _rewrite_keeps_meaning(path, answer)
