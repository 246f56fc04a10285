"""The YAML config: defaults, validation errors that name key and line, config_yaml bytes."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

import cliproxy_host
from cliproxy_host import errors
from cliproxy_host.config.schema import (
    ConfigError,
    HostConfig,
    HttpPolicy,
    PluginConfig,
    PluginsSection,
    RemoteManagement,
    StoreConfig,
)
from cliproxy_host.errors import InvalidConfig, PluginError

DEFAULT_YAML = b"enabled: false\npriority: 0\n"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> HostConfig:
    return HostConfig.load(write(tmp_path, text))


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        HostConfig.load(path)
    return str(caught.value).replace(str(path), "config.yaml")


def plugin_yaml(tmp_path: Path, entry: str, plugin_id: str = "simple-c") -> bytes:
    indented = textwrap.indent(textwrap.dedent(entry).strip("\n"), " " * 6)
    text = f"plugins:\n  configs:\n    {plugin_id}:\n{indented}\n"
    return HostConfig.load(write(tmp_path, text)).config_yaml(plugin_id)


def parse(data: bytes) -> Any:
    return YAML(typ="safe", pure=True).load(data)


# defaults and the full shape


@pytest.mark.parametrize("text", ["", "\n", "# just a comment\n", "---\n", "plugins:\nhttp:\n"])
def test_an_empty_config_gives_the_defaults(tmp_path: Path, text: str) -> None:
    config = load(tmp_path, text)
    assert config.plugins == PluginsSection()
    assert config.plugins.enabled is False
    assert config.plugins.dir == "plugins"
    assert config.plugins.registration_timeout_seconds == 10
    assert config.plugins.configs == {}
    assert config.http == HttpPolicy()
    assert config.http.timeout_seconds == 30
    assert config.http.max_response_bytes == 16 * 1024 * 1024
    assert config.http.allowed_hosts == []
    assert config.http.proxy_url is None


def test_from_mapping_of_nothing_gives_the_defaults() -> None:
    assert HostConfig.from_mapping({}) == HostConfig()
    assert HostConfig.from_mapping(None) == HostConfig()


def test_a_full_config_loads(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        plugins:
          enabled: true
          dir: lib/plugins
          registration-timeout-seconds: 2.5
          configs:
            simple-c:
              enabled: true
              priority: 10
              store: {version: "1.2.0"}
              mode: safe
            rust-echo:
              priority: -5
        http:
          timeout-seconds: 5
          max-response-bytes: 1024
          allowed-hosts: ["*.example.com", api.test]
          proxy-url: http://proxy:3128
        """,
    )
    assert config.plugins.enabled is True
    assert config.plugins.dir == "lib/plugins"
    assert config.plugins.registration_timeout_seconds == 2.5
    assert list(config.plugins.configs) == ["simple-c", "rust-echo"]
    entry = config.plugin_entry("simple-c")
    assert (entry.enabled, entry.priority, entry.pinned_version) == (True, 10, "1.2.0")
    assert entry.settings == {"mode": "safe"}
    other = config.plugin_entry("rust-echo")
    assert (other.enabled, other.priority, other.pinned_version) == (False, -5, None)
    assert config.http == HttpPolicy(
        timeout_seconds=5,
        max_response_bytes=1024,
        allowed_hosts=["*.example.com", "api.test"],
        proxy_url="http://proxy:3128",
    )


def test_a_plugin_without_an_entry_gets_the_defaults(tmp_path: Path) -> None:
    entry = load(tmp_path, "plugins: {enabled: true}").plugin_entry("absent")
    assert entry == PluginConfig()
    assert (entry.enabled, entry.priority, entry.pinned_version, entry.settings) == (
        False,
        0,
        None,
        {},
    )


def test_an_entry_with_nothing_in_it_gets_the_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "plugins:\n  configs:\n    bare:\n")
    assert "bare" in config.plugins.configs
    assert config.plugin_entry("bare").enabled is False
    assert config.plugin_entry("bare").priority == 0


def test_unknown_top_level_keys_are_kept_and_ignored(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        port: 8317
        other-app: {plugins: not ours, nested: [1, 2]}
        1: numeric key
        plugins: {enabled: true}
        """,
    )
    assert config.plugins.enabled is True
    assert config.model_extra == {
        "port": 8317,
        "other-app": {"plugins": "not ours", "nested": [1, 2]},
    }


# remote-management


def test_remote_management_defaults_to_local_only_without_a_key(tmp_path: Path) -> None:
    for text in ("", "remote-management:\n", "remote-management: {}\n"):
        config = load(tmp_path, text)
        assert config.remote_management == RemoteManagement()
        assert config.remote_management.allow_remote is False
        assert config.remote_management.secret_key is None


def test_remote_management_loads(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        remote-management:
          allow-remote: true
          secret-key: "$2b$12$abcdefghijklmnopqrstuv"
        """,
    )
    assert config.remote_management == RemoteManagement(
        allow_remote=True, secret_key="$2b$12$abcdefghijklmnopqrstuv"
    )
    assert config.model_extra == {}


def test_a_plaintext_secret_key_loads_as_written(tmp_path: Path) -> None:
    config = load(tmp_path, "remote-management: {secret-key: 'open sesame'}\n")
    assert config.remote_management.secret_key == "open sesame"


def test_the_secret_key_is_kept_out_of_repr(tmp_path: Path) -> None:
    config = load(tmp_path, "remote-management: {secret-key: 'open sesame'}\n")
    assert "open sesame" not in repr(config)
    assert "open sesame" not in repr(config.remote_management)


def test_remote_management_can_be_built_in_python() -> None:
    config = HostConfig(remote_management=RemoteManagement(allow_remote=True))
    assert config.remote_management.allow_remote is True
    assert config.model_extra == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "remote-management:\n  allow-remote: 'yes'\n",
            "config.yaml:2: remote-management.allow-remote: expected true or false, got 'yes'",
        ),
        (
            "remote-management:\n  allow-remote: 1\n",
            "config.yaml:2: remote-management.allow-remote: expected true or false, got 1",
        ),
        (
            "remote-management:\n  secret-key: 1234\n",
            "config.yaml:2: remote-management.secret-key: expected a string, got 1234"
            " (put it in quotes)",
        ),
        (
            "remote-management:\n  secret-key: [a]\n",
            "config.yaml:2: remote-management.secret-key: expected a string, got a list",
        ),
        (
            "remote-management: on\n",
            "config.yaml:1: remote-management: expected a mapping, got 'on'",
        ),
        (
            "remote-management:\n  allow-remote: false\n  allow-remotes: true\n",
            "config.yaml:3: remote-management.allow-remotes: unknown key;"
            " expected one of: allow-remote, secret-key, "
            "disable-control-panel, disable-auto-update-panel, panel-github-repository, "
            "max-body-bytes, resource-link-ttl, open-plugin-resources, metrics-key",
        ),
    ],
)
def test_invalid_remote_management_names_the_key_and_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert load_error(tmp_path, text) == expected


# plugins_dir


def test_a_relative_plugins_dir_is_taken_from_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", "plugins: {dir: lib/plugins}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert HostConfig.load(path).plugins_dir() == tmp_path / "etc" / "lib" / "plugins"


def test_the_default_plugins_dir_is_next_to_a_config_loaded_by_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "")
    monkeypatch.chdir(tmp_path)
    assert HostConfig.load("config.yaml").plugins_dir() == tmp_path / "plugins"


def test_an_absolute_plugins_dir_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "plugins"
    path = write(tmp_path, f"plugins: {{dir: '{target}'}}")
    assert HostConfig.load(path).plugins_dir() == target


def test_an_in_memory_config_takes_its_plugins_dir_from_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert HostConfig.from_mapping({}).plugins_dir() == tmp_path / "plugins"


# pinned versions


@pytest.mark.parametrize(
    ("store", "pin"),
    [
        ('{version: "1.2.0"}', "1.2.0"),
        ('{version: "v1.2.0"}', "1.2.0"),
        ('{version: "V1.2.0"}', "1.2.0"),
        ('{release-tag: "v2.0.0"}', "2.0.0"),
        ('{version: "1.0", release-tag: "v2.0"}', "1.0"),
        ('{version: "", release-tag: "v2.0"}', "2.0"),
        ('{version: ""}', None),
        ("{version: null}", None),
        ("{}", None),
        ("{source: github, repo: owner/name}", None),
    ],
)
def test_the_pinned_version_comes_from_store(tmp_path: Path, store: str, pin: str | None) -> None:
    config = load(tmp_path, f"plugins:\n  configs:\n    p:\n      store: {store}\n")
    assert config.plugin_entry("p").pinned_version == pin


def test_store_is_not_one_of_the_plugins_settings(tmp_path: Path) -> None:
    config = load(tmp_path, "plugins:\n  configs:\n    p: {store: {version: '1'}, mode: x}\n")
    entry = config.plugin_entry("p")
    assert entry.settings == {"mode": "x"}
    assert entry.store == StoreConfig(version="1")


# validation errors: file, line, key path, what is expected


@pytest.mark.parametrize(
    ("value", "got"),
    [("high", "'high'"), ('"10"', "'10'"), ("1.0", "1.0"), ("true", "true"), ("[1]", "a list")],
)
def test_priority_must_be_an_integer(tmp_path: Path, value: str, got: str) -> None:
    error = load_error(
        tmp_path,
        f"""
        # comment lines count
        plugins:
          enabled: true
          configs:
            other: {{}}
            simple-c:
              priority: {value}
        """,
    )
    assert error == (
        f"config.yaml:7: plugins.configs.simple-c.priority: expected an integer, got {got}"
    )


@pytest.mark.parametrize(
    ("value", "got"),
    [("yes", "'yes'"), ('"true"', "'true'"), ("1", "1"), ("on", "'on'"), ("null", "null")],
)
def test_enabled_must_be_a_real_boolean(tmp_path: Path, value: str, got: str) -> None:
    error = load_error(tmp_path, f"plugins:\n  configs:\n    p:\n      enabled: {value}\n")
    assert error == f"config.yaml:4: plugins.configs.p.enabled: expected true or false, got {got}"


def test_plugins_enabled_must_be_a_real_boolean(tmp_path: Path) -> None:
    assert load_error(tmp_path, "plugins:\n  enabled: 'yes'\n") == (
        "config.yaml:2: plugins.enabled: expected true or false, got 'yes'"
    )


def test_large_and_negative_priorities_are_integers(tmp_path: Path) -> None:
    config = load(
        tmp_path, "plugins:\n  configs:\n    a: {priority: -7}\n    b: {priority: 0x10}\n"
    )
    assert config.plugin_entry("a").priority == -7
    assert config.plugin_entry("b").priority == 16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "plugins:\n  dir: 3\n",
            "config.yaml:2: plugins.dir: expected a string, got 3 (put it in quotes)",
        ),
        ("plugins:\n  dir: ''\n", "config.yaml:2: plugins.dir: expected a non-empty string"),
        (
            "plugins:\n  registration-timeout-seconds: 0\n",
            "config.yaml:2: plugins.registration-timeout-seconds:"
            " expected a number greater than 0, got 0",
        ),
        (
            "plugins:\n  registration-timeout-seconds: '10'\n",
            "config.yaml:2: plugins.registration-timeout-seconds: expected a number, got '10'",
        ),
        (
            "plugins:\n  configs: [a, b]\n",
            "config.yaml:2: plugins.configs: expected a mapping, got a list",
        ),
        ("plugins: on\n", "config.yaml:1: plugins: expected a mapping, got 'on'"),
        (
            "http:\n  timeout-seconds: '30'\n",
            "config.yaml:2: http.timeout-seconds: expected a number, got '30'",
        ),
        (
            "http:\n  timeout-seconds: -1\n",
            "config.yaml:2: http.timeout-seconds: expected a number greater than 0, got -1",
        ),
        (
            "http:\n  max-response-bytes: 1.5\n",
            "config.yaml:2: http.max-response-bytes: expected an integer, got 1.5",
        ),
        (
            "http:\n  allowed-hosts: example.com\n",
            "config.yaml:2: http.allowed-hosts: expected a list, got 'example.com'",
        ),
        (
            "http:\n  allowed-hosts:\n    - a.test\n    - 42\n",
            "config.yaml:4: http.allowed-hosts[1]: expected a string, got 42 (put it in quotes)",
        ),
        (
            "http:\n  proxy-url: 8080\n",
            "config.yaml:2: http.proxy-url: expected a string, got 8080 (put it in quotes)",
        ),
        (
            "plugins:\n  configs:\n    p: [1, 2]\n",
            "config.yaml:3: plugins.configs.p: expected a mapping, got a list",
        ),
        (
            "plugins:\n  spin-us: -5\n",
            "config.yaml:2: plugins.spin-us: input should be greater than or equal to 0, got -5",
        ),
        (
            "plugins:\n  configs:\n    p: 'on'\n",
            "config.yaml:3: plugins.configs.p: expected a mapping, got 'on'",
        ),
        (
            "plugins:\n  configs:\n    p:\n      store: 1.2.0\n",
            "config.yaml:4: plugins.configs.p.store: expected a mapping, got '1.2.0'",
        ),
        (
            "plugins:\n  configs:\n    p:\n      store:\n        version: 1.2\n",
            "config.yaml:5: plugins.configs.p.store.version: expected a string,"
            " got 1.2 (put it in quotes)",
        ),
        (
            "plugins:\n  configs:\n    p:\n      1: numeric\n",
            "config.yaml:4: plugins.configs.p.1: expected a string key, got 1",
        ),
    ],
)
def test_invalid_values_name_the_key_the_line_and_what_is_expected(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert load_error(tmp_path, text) == expected


def test_unknown_keys_in_plugins_are_errors(tmp_path: Path) -> None:
    assert load_error(tmp_path, "plugins:\n  enabled: true\n  enable: true\n") == (
        "config.yaml:3: plugins.enable: unknown key;"
        " expected one of: enabled, dir, registration-timeout-seconds, timeout-ms,"
        " max-response-bytes, busy-wait-ms, fuse-crashes, fuse-window-seconds,"
        " breaker-failures, breaker-cooldown-seconds, spin-us, model-call-depth,"
        " plugin-call-depth, default-permissions, socket, configs,"
        " store-sources, store-official, store-github-api, store-max-bytes, max-upload-bytes,"
        " store-timeout-seconds, trusted-keys, require-signature"
    )


def test_unknown_keys_in_http_are_errors(tmp_path: Path) -> None:
    assert load_error(tmp_path, "http:\n  timeout: 3\n") == (
        "config.yaml:2: http.timeout: unknown key;"
        " expected one of: timeout-seconds, max-response-bytes, allowed-hosts, proxy-url"
    )


@pytest.mark.parametrize(
    "plugin_id", ["bad id", "-leading-dash", ".hidden", "sl/ash", "a" * 129, "ünicode"]
)
def test_plugin_ids_must_be_valid(tmp_path: Path, plugin_id: str) -> None:
    error = load_error(
        tmp_path, f"plugins:\n  enabled: true\n  configs:\n    '{plugin_id}': {{}}\n"
    )
    assert error.startswith(
        f"config.yaml:4: plugins.configs.{plugin_id}: invalid plugin ID {plugin_id!r}:"
    )
    assert "starting with a letter or digit" in error


def test_plugin_ids_up_to_128_characters_are_valid(tmp_path: Path) -> None:
    plugin_id = "A1._-" + "x" * 123
    config = load(tmp_path, f"plugins:\n  configs:\n    {plugin_id}: {{}}\n")
    assert plugin_id in config.plugins.configs


def test_a_numeric_plugin_id_is_an_error(tmp_path: Path) -> None:
    assert load_error(tmp_path, "plugins:\n  configs:\n    42: {}\n") == (
        "config.yaml:3: plugins.configs.42: expected a string key, got 42"
    )


def test_every_error_is_reported_in_line_order(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        """
        http:
          timeout-seconds: never
        plugins:
          configs:
            b:
              enabled: maybe
            a:
              priority: first
          bogus: 1
        """,
    )
    assert error.splitlines() == [
        "config.yaml:2: http.timeout-seconds: expected a number, got 'never'",
        "config.yaml:6: plugins.configs.b.enabled: expected true or false, got 'maybe'",
        "config.yaml:8: plugins.configs.a.priority: expected an integer, got 'first'",
        "config.yaml:9: plugins.bogus: unknown key;"
        " expected one of: enabled, dir, registration-timeout-seconds, timeout-ms,"
        " max-response-bytes, busy-wait-ms, fuse-crashes, fuse-window-seconds,"
        " breaker-failures, breaker-cooldown-seconds, spin-us, model-call-depth,"
        " plugin-call-depth, default-permissions, socket, configs,"
        " store-sources, store-official, store-github-api, store-max-bytes, max-upload-bytes,"
        " store-timeout-seconds, trusted-keys, require-signature",
    ]


def test_errors_in_flow_style_name_the_line_too(tmp_path: Path) -> None:
    error = load_error(tmp_path, "plugins: {configs: {a: {}, \n  b: {priority: x}}}\n")
    assert error == "config.yaml:2: plugins.configs.b.priority: expected an integer, got 'x'"


def test_a_top_level_that_is_no_mapping_is_an_error(tmp_path: Path) -> None:
    assert load_error(tmp_path, "- plugins\n- http\n") == (
        "config.yaml:1: expected a mapping at the top level, got a list"
    )
    assert load_error(tmp_path, "just text\n") == (
        "config.yaml: expected a mapping at the top level, got 'just text'"
    )


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, "plugins:\n  enabled: true\n  configs: {a: [1, 2}\n")
    assert error.startswith("config.yaml:3: invalid YAML: ")


def test_a_tab_indent_is_invalid_yaml(tmp_path: Path) -> None:
    error = load_error(tmp_path, "plugins:\n\tenabled: true\n")
    assert error.startswith("config.yaml:2: invalid YAML: ")


def test_a_duplicate_key_is_an_error_naming_its_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, "plugins:\n  enabled: true\n  dir: a\n  enabled: false\n")
    assert error.startswith("config.yaml:4: invalid YAML: ")
    assert "duplicate key" in error


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found$"):
        HostConfig.load(path)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        HostConfig.load(tmp_path)


def test_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"plugins:\n  dir: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        HostConfig.load(path)


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xef\xbb\xbfplugins: {enabled: true}\n")
    assert HostConfig.load(path).plugins.enabled is True


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config file not found"):
        HostConfig.load(tmp_path / "missing.yaml")


def test_config_error_is_in_the_error_tree_as_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("plugins:\n  enabled: 1\n", encoding="utf-8")
    with pytest.raises(PluginError) as caught:
        HostConfig.load(path)
    error = caught.value
    assert isinstance(error, ConfigError)
    assert isinstance(error, InvalidConfig)
    assert (error.code, error.http_status, error.retryable) == ("invalid_config", 400, False)
    # The message alone, as before: it names the file and line itself.
    expected = f"{path}:2: plugins.enabled: expected true or false, got 1"
    assert str(error) == error.message == expected
    assert error.error_dict() == {"code": "invalid_config", "message": error.message}


def test_config_error_is_exported_with_the_error_tree() -> None:
    assert cliproxy_host.ConfigError is ConfigError is errors.ConfigError


def test_from_mapping_errors_name_the_source_and_key_without_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        HostConfig.from_mapping({"plugins": {"configs": {"p": {"priority": "high"}}}})
    assert str(caught.value) == (
        "<memory>: plugins.configs.p.priority: expected an integer, got 'high'"
    )
    with pytest.raises(ConfigError, match=r"^api: http\.bogus: unknown key"):
        HostConfig.from_mapping({"http": {"bogus": 1}}, source="api")


def test_from_mapping_of_a_ruamel_document_knows_the_lines() -> None:
    document = YAML(typ="rt").load("plugins:\n  configs:\n    p:\n      priority: x\n")
    with pytest.raises(ConfigError, match=r"^doc:4: plugins\.configs\.p\.priority: "):
        HostConfig.from_mapping(document, source="doc")


# per-plugin settings


def test_the_plugins_own_keys_are_kept_verbatim_in_order(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        plugins:
          configs:
            p:
              zeta: 1
              enabled: true
              alpha: {nested: [1, {deep: "x"}], other: null}
              mid: "ünï ✓"
              when: 2024-01-02
              ratio: 0.5
              flag: false
        """,
    )
    settings = config.plugin_entry("p").settings
    assert settings == {
        "zeta": 1,
        "alpha": {"nested": [1, {"deep": "x"}], "other": None},
        "mid": "ünï ✓",
        "when": datetime.date(2024, 1, 2),
        "ratio": 0.5,
        "flag": False,
    }
    assert list(settings) == ["zeta", "alpha", "mid", "when", "ratio", "flag"]
    # Plain Python values, not ruamel's round-trip types.
    assert type(settings["alpha"]) is dict
    assert type(settings["alpha"]["nested"]) is list


def test_plugin_settings_may_be_named_like_host_keys_elsewhere(tmp_path: Path) -> None:
    config = load(tmp_path, "plugins:\n  configs:\n    p: {dir: x, configs: y, http: z}\n")
    assert config.plugin_entry("p").settings == {"dir": "x", "configs": "y", "http": "z"}


# config_yaml


def test_config_yaml_of_a_plugin_without_an_entry(tmp_path: Path) -> None:
    assert load(tmp_path, "").config_yaml("absent") == DEFAULT_YAML
    assert HostConfig.from_mapping({}).config_yaml("absent") == DEFAULT_YAML


def test_config_yaml_of_an_empty_entry(tmp_path: Path) -> None:
    assert load(tmp_path, "plugins:\n  configs:\n    p:\n").config_yaml("p") == DEFAULT_YAML
    assert load(tmp_path, "plugins:\n  configs:\n    p: {}\n").config_yaml("p") == DEFAULT_YAML


def test_config_yaml_appends_enabled_and_priority_when_left_out(tmp_path: Path) -> None:
    assert plugin_yaml(tmp_path, "mode: safe") == b"mode: safe\nenabled: false\npriority: 0\n"
    assert plugin_yaml(tmp_path, "priority: 3\nmode: safe") == (
        b"priority: 3\nmode: safe\nenabled: false\n"
    )


def test_config_yaml_keeps_the_users_key_order(tmp_path: Path) -> None:
    entry = """
        zeta: 1
        priority: 10
        alpha: 2
        enabled: true
        mid: 3
        """
    assert plugin_yaml(tmp_path, entry) == (
        b"zeta: 1\npriority: 10\nalpha: 2\nenabled: true\nmid: 3\n"
    )


def test_config_yaml_of_nested_settings_is_block_style(tmp_path: Path) -> None:
    entry = """
        enabled: true
        store: {version: "v1.2.0", source: github}
        upstream: {url: "https://example.com", retries: 3, codes: [429, 503]}
        models:
          - {name: a, aliases: [p, q]}
          - name: b
        empty-map: {}
        empty-list: []
        """
    assert plugin_yaml(tmp_path, entry) == (
        b"enabled: true\n"
        b"store:\n"
        b"  version: v1.2.0\n"
        b"  source: github\n"
        b"upstream:\n"
        b"  url: https://example.com\n"
        b"  retries: 3\n"
        b"  codes:\n"
        b"    - 429\n"
        b"    - 503\n"
        b"models:\n"
        b"  - name: a\n"
        b"    aliases:\n"
        b"      - p\n"
        b"      - q\n"
        b"  - name: b\n"
        b"empty-map: {}\n"
        b"empty-list: []\n"
        b"priority: 0\n"
    )


def test_config_yaml_writes_unicode_as_utf8(tmp_path: Path) -> None:
    data = plugin_yaml(tmp_path, 'greeting: "héllo wörld ✓ 日本語 🙂"\nключ: значение')
    expected = "greeting: héllo wörld ✓ 日本語 🙂\nключ: значение\nenabled: false\npriority: 0\n"
    assert data == expected.encode()


def test_config_yaml_quotes_strings_a_yaml_parser_would_read_as_something_else(
    tmp_path: Path,
) -> None:
    entry = """
        a: "yes"
        b: "on"
        c: "10"
        d: "1.5"
        e: "null"
        f: ""
        g: "~"
        h: "true"
        i: "a: b"
        j: "#not a comment"
        k: "0x1F"
        l: " padded "
        "n": plain
        "y": "Y"
        """
    data = plugin_yaml(tmp_path, entry)
    expected = {
        "a": "yes",
        "b": "on",
        "c": "10",
        "d": "1.5",
        "e": "null",
        "f": "",
        "g": "~",
        "h": "true",
        "i": "a: b",
        "j": "#not a comment",
        "k": "0x1F",
        "l": " padded ",
        "n": "plain",
        "y": "Y",
        "enabled": False,
        "priority": 0,
    }
    assert parse(data) == expected
    # YAML 1.1 parsers (libyaml, Go) read unquoted yes/on/n as booleans.
    assert b"a: 'yes'\n" in data
    assert b"b: 'on'\n" in data
    assert b"'n': plain\n" in data
    assert b"'y': 'Y'\n" in data


def test_config_yaml_writes_nulls_explicitly_and_keeps_scalar_types(tmp_path: Path) -> None:
    data = plugin_yaml(
        tmp_path, "none:\ntilde: ~\nint: 7\nfloat: 2.50\nbool: false\nday: 2024-01-02\n"
    )
    assert data == (
        b"none: null\ntilde: null\nint: 7\nfloat: 2.5\nbool: false\nday: 2024-01-02\n"
        b"enabled: false\npriority: 0\n"
    )


def test_config_yaml_writes_multiline_strings_as_literal_blocks(tmp_path: Path) -> None:
    entry = 'pem: |\n  -----BEGIN-----\n  abc\n  -----END-----\nshort: "x\\ny"'
    data = plugin_yaml(tmp_path, entry)
    assert data == (
        b"pem: |\n  -----BEGIN-----\n  abc\n  -----END-----\n"
        b"short: |-\n  x\n  y\n"
        b"enabled: false\npriority: 0\n"
    )
    assert parse(data)["pem"] == "-----BEGIN-----\nabc\n-----END-----\n"


def test_config_yaml_never_folds_a_long_string(tmp_path: Path) -> None:
    long = "word " * 100
    data = plugin_yaml(tmp_path, f"text: '{long}'")
    assert data.count(b"\n") == 3
    assert parse(data)["text"] == long


def test_config_yaml_round_trips_to_the_same_values(tmp_path: Path) -> None:
    entry = """
        priority: 2
        mode: fast
        limits: {rpm: 60, burst: 1.5, tags: [a, "b c"]}
        """
    assert parse(plugin_yaml(tmp_path, entry)) == {
        "priority": 2,
        "mode": "fast",
        "limits": {"rpm": 60, "burst": 1.5, "tags": ["a", "b c"]},
        "enabled": False,
    }


def test_config_yaml_is_the_same_for_the_same_config(tmp_path: Path) -> None:
    entry = "mode: safe\nnested: {b: 1, a: [x, y]}\nenabled: true"
    assert plugin_yaml(tmp_path, entry) == plugin_yaml(tmp_path, entry)


def test_config_yaml_ignores_comments_and_layout(tmp_path: Path) -> None:
    block = plugin_yaml(tmp_path, "# note\nmode: safe   # why\nnested:\n  a: [p, q]\n")
    flow = plugin_yaml(tmp_path, "{mode: 'safe', nested: {a: [p, \"q\"]}}")
    assert block == flow
    assert block == b"mode: safe\nnested:\n  a:\n    - p\n    - q\nenabled: false\npriority: 0\n"


def test_config_yaml_changes_when_the_plugins_config_does(tmp_path: Path) -> None:
    assert plugin_yaml(tmp_path, "mode: safe") != plugin_yaml(tmp_path, "mode: fast")
    assert plugin_yaml(tmp_path, "a: 1\nb: 2") != plugin_yaml(tmp_path, "b: 2\na: 1")


def test_config_yaml_is_only_the_plugins_own_entry(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        plugins:
          enabled: true
          configs:
            a: {mode: one}
            b: {mode: two, priority: 1}
        http: {timeout-seconds: 1}
        """,
    )
    assert config.config_yaml("a") == b"mode: one\nenabled: false\npriority: 0\n"
    assert config.config_yaml("b") == b"mode: two\npriority: 1\nenabled: false\n"


def test_config_yaml_follows_a_copied_and_changed_entry(tmp_path: Path) -> None:
    config = load(tmp_path, "plugins:\n  configs:\n    p: {mode: safe, enabled: false}\n")
    changed = config.plugin_entry("p").model_copy(update={"enabled": True})
    assert changed.config_yaml() == b"mode: safe\nenabled: true\npriority: 0\n"


def test_config_yaml_of_an_entry_built_in_python() -> None:
    config = HostConfig(
        plugins=PluginsSection(configs={"p": PluginConfig.model_validate({"mode": "x"})})
    )
    assert config.config_yaml("p") == b"mode: x\nenabled: false\npriority: 0\n"


def test_merge_keys_are_resolved(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        shared: &base {mode: safe, level: 3}
        plugins:
          configs:
            p:
              <<: *base
              level: 4
        """,
    )
    assert config.plugin_entry("p").settings == {"level": 4, "mode": "safe"}


def test_the_go_hosts_control_panel_keys_are_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "remote-management:\n  allow-remote: false\n  disable-control-panel: true\n"
        "  disable-auto-update-panel: false\n"
        "  panel-github-repository: https://example.invalid/panel\n",
    )
    assert HostConfig.load(path).remote_management.allow_remote is False
