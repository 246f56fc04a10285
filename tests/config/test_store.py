"""ConfigStore: changes keep the user's comments and layout, are validated before they are
written, are written atomically, and never overwrite a hand edit."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host.config import ConfigError, ConfigStore, HostConfig

CONFIG = """\
# cliproxy-host config, written by hand: keep my comments

plugins:
  enabled: true          # master switch
  dir: "plugins"
  configs:
    # The C example, safe mode only
    simple-c:
      enabled: true      # on by default
      priority: 10       # higher runs first
      mode: "safe"       # safe | fast

    # Rust echo, off for now
    simple-rust:
      enabled: false
      priority: 20
      tags:
        - a
        - b
http:
  timeout-seconds: 30
  allowed-hosts: ["127.0.0.1", "localhost"]

# Owned by another program: the host must leave it alone
other-app:
  port: 8317             # its port
  api-keys:
    - 'k1'
    - "k2"
"""


def make_store(
    tmp_path: Path,
    text: str = CONFIG,
    *,
    protect_secret: Callable[[str], str] | None = None,
) -> tuple[ConfigStore, Path]:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return ConfigStore(path, protect_secret=protect_secret), path


def edited(old: str, new: str, text: str = CONFIG) -> str:
    """The text with one exact piece replaced, so each test shows just what changes."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def files_in(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def fake_hash(value: str) -> str:
    """Stands in for bcrypt: marks a value as protected, leaves a protected one alone."""
    return value if value.startswith("$2b$") else f"$2b$12${value[::-1]}"


# reading


def test_the_store_reads_the_file(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    config = store.config
    assert config.plugins.enabled is True
    assert list(config.plugins.configs) == ["simple-c", "simple-rust"]
    assert config.plugin_entry("simple-c").settings == {"mode": "safe"}
    assert config.model_extra == {
        "other-app": {"port": 8317, "api-keys": ["k1", "k2"]},
    }
    assert config.plugins_dir() == tmp_path / "plugins"
    assert config == HostConfig.load(path)


def test_a_missing_file_gives_the_defaults_and_is_not_created_by_reading(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    store = ConfigStore(path)
    assert store.config.model_dump() == HostConfig().model_dump()
    assert store.config.plugins_dir() == tmp_path / "plugins"
    assert not path.exists()


def test_an_invalid_file_cannot_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("plugins:\n  enabled: maybe\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config\.yaml:2: plugins\.enabled: expected true"):
        ConfigStore(path)


# changes keep the file as the user wrote it


def test_a_patch_changes_only_the_lines_it_must(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    config = store.patch_plugin_config("simple-c", {"mode": "fast", "level": 3})
    assert path.read_text(encoding="utf-8") == edited(
        '      mode: "safe"       # safe | fast\n',
        '      mode: "fast"       # safe | fast\n      level: 3\n',
    )
    assert config.plugin_entry("simple-c").settings == {"mode": "fast", "level": 3}


def test_setting_a_value_back_gives_the_same_bytes(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    store.set_enabled("simple-c", False)
    assert path.read_text(encoding="utf-8") == edited(
        "      enabled: true      # on by default\n",
        "      enabled: false     # on by default\n",
    )
    store.set_enabled("simple-c", True)
    assert path.read_bytes() == CONFIG.encode()


def test_a_change_that_changes_nothing_writes_nothing(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    before = path.stat()
    config = store.config
    assert store.set_enabled("simple-c", True) is config
    assert store.patch_plugin_config("simple-c", {"mode": "safe", "absent": None}) is config
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_replace_keeps_unchanged_values_as_written_and_adds_new_ones_as_blocks(
    tmp_path: Path,
) -> None:
    store, path = make_store(tmp_path)
    settings = {
        "enabled": True,
        "priority": 20,
        "tags": ["a", "b"],
        "upstream": {"url": "https://example.com", "codes": [429, 503]},
    }
    config = store.replace_plugin_config("simple-rust", settings)
    assert path.read_text(encoding="utf-8") == edited(
        "      enabled: false\n      priority: 20\n      tags:\n        - a\n        - b\n",
        "      enabled: true\n      priority: 20\n      tags:\n        - a\n        - b\n"
        "      upstream:\n"
        "        url: https://example.com\n"
        "        codes:\n"
        "          - 429\n"
        "          - 503\n",
    )
    assert config.plugin_entry("simple-rust").as_mapping() == settings


def test_replace_drops_the_keys_left_out_and_takes_the_order_given(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    store.replace_plugin_config("simple-c", {"mode": "safe", "priority": 10})
    assert path.read_text(encoding="utf-8") == edited(
        "      enabled: true      # on by default\n"
        "      priority: 10       # higher runs first\n"
        '      mode: "safe"       # safe | fast\n',
        '      mode: "safe"       # safe | fast\n      priority: 10       # higher runs first\n',
    )
    assert list(store.config.plugin_entry("simple-c").as_mapping()) == ["mode", "priority"]


def test_replace_with_nothing_leaves_an_empty_entry(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    config = store.replace_plugin_config("simple-c", {})
    assert "simple-c" in config.plugins.configs
    assert config.plugin_entry("simple-c").as_mapping() == {}


def test_null_in_a_patch_deletes_the_key(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    config = store.patch_plugin_config("simple-c", {"mode": None, "never-there": None})
    assert path.read_text(encoding="utf-8") == edited(
        '      mode: "safe"       # safe | fast\n', ""
    )
    assert config.plugin_entry("simple-c").settings == {}


def test_a_patch_replaces_a_nested_value_whole(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    store.patch_plugin_config("simple-c", {"limits": {"rpm": 60, "burst": 2}})
    config = store.patch_plugin_config("simple-c", {"limits": {"rpm": 30}})
    assert config.plugin_entry("simple-c").settings["limits"] == {"rpm": 30}


def test_set_enabled_creates_the_entry_of_an_absent_plugin(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    config = store.set_enabled("new-plugin", True)
    assert path.read_text(encoding="utf-8") == edited(
        "        - b\nhttp:\n",
        "        - b\n    new-plugin:\n      enabled: true\nhttp:\n",
    )
    assert config.plugin_entry("new-plugin").enabled is True


def test_delete_drops_the_entry_with_the_comment_above_it(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    config = store.delete_plugin("simple-c")
    assert path.read_text(encoding="utf-8") == edited(
        "  configs:\n"
        "    # The C example, safe mode only\n"
        "    simple-c:\n"
        "      enabled: true      # on by default\n"
        "      priority: 10       # higher runs first\n"
        '      mode: "safe"       # safe | fast\n'
        "\n",
        "  configs:\n",
    )
    assert list(config.plugins.configs) == ["simple-rust"]


def test_delete_of_the_last_entry_keeps_what_follows(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    store.delete_plugin("simple-rust")
    assert path.read_text(encoding="utf-8") == edited(
        "\n    # Rust echo, off for now\n"
        "    simple-rust:\n"
        "      enabled: false\n"
        "      priority: 20\n"
        "      tags:\n"
        "        - a\n"
        "        - b\n",
        "",
    )


def test_deleting_every_entry_leaves_an_empty_configs(tmp_path: Path) -> None:
    store, path = make_store(tmp_path, "plugins:\n  configs:\n    a: {}\n")
    store.delete_plugin("a")
    assert path.read_text(encoding="utf-8") == "plugins:\n  configs: {}\n"


def test_delete_of_an_absent_plugin_is_no_error_and_writes_nothing(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    config = store.config
    assert store.delete_plugin("absent") is config
    assert path.read_bytes() == CONFIG.encode()
    empty = ConfigStore(tmp_path / "missing.yaml")
    empty.delete_plugin("absent")
    assert not (tmp_path / "missing.yaml").exists()


def test_a_comment_after_a_literal_block_stays_with_the_next_entry(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        plugins:
          configs:
            a:
              pem: |
                -----BEGIN-----
            # b is next
            b:
              enabled: true
        """
    )
    store, path = make_store(tmp_path, text)
    store.delete_plugin("a")
    assert path.read_text(encoding="utf-8") == (
        "plugins:\n  configs:\n    # b is next\n    b:\n      enabled: true\n"
    )


def test_comments_at_the_end_of_the_file_stay_at_the_end(tmp_path: Path) -> None:
    text = "plugins:\n  configs:\n    a:\n      enabled: false\n# the end\n"
    store, path = make_store(tmp_path, text)
    store.set_enabled("b", True)
    assert path.read_text(encoding="utf-8") == (
        "plugins:\n  configs:\n    a:\n      enabled: false\n"
        "    b:\n      enabled: true\n# the end\n"
    )


# sections the file does not have yet


def test_plugins_and_configs_are_created_when_missing(tmp_path: Path) -> None:
    text = "# other program's settings\nother-app:\n  port: 8317   # its port\n"
    store, path = make_store(tmp_path, text)
    store.set_enabled("simple-c", True)
    assert path.read_text(encoding="utf-8") == text + (
        "plugins:\n  configs:\n    simple-c:\n      enabled: true\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plugins:\nhttp:\n", "plugins:\n  configs:\n    p:\n      enabled: true\nhttp:\n"),
        ("plugins:\n  configs:\n", "plugins:\n  configs:\n    p:\n      enabled: true\n"),
        ("plugins:\n  configs: {}\n", "plugins:\n  configs:\n    p:\n      enabled: true\n"),
        ("plugins:\n  configs:\n    p:\n", "plugins:\n  configs:\n    p:\n      enabled: true\n"),
    ],
)
def test_empty_sections_grow_as_blocks(tmp_path: Path, text: str, expected: str) -> None:
    store, path = make_store(tmp_path, text)
    store.set_enabled("p", True)
    assert path.read_text(encoding="utf-8") == expected


def test_a_file_of_only_comments_keeps_them_on_top(tmp_path: Path) -> None:
    text = "# plugins:\n#   enabled: true\n"
    store, path = make_store(tmp_path, text)
    assert store.config.model_dump() == HostConfig().model_dump()
    store.set_enabled("p", True)
    assert path.read_text(encoding="utf-8") == text + (
        "plugins:\n  configs:\n    p:\n      enabled: true\n"
    )


def test_the_first_change_creates_a_missing_file_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    store = ConfigStore(path)
    store.set_enabled("p", True)
    assert path.read_text(encoding="utf-8") == "plugins:\n  configs:\n    p:\n      enabled: true\n"
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


# values given as plain Python


def test_values_from_python_are_written_as_block_yaml_that_reads_back_the_same(
    tmp_path: Path,
) -> None:
    store, path = make_store(tmp_path, "plugins:\n  configs: {}\n")
    settings: dict[str, Any] = {
        "yes": "yes",
        "number-text": "10",
        "empty": "",
        "colon": "a: b",
        "lines": "first\nsecond\n",
        "unicode": "héllo ✓",
        "ratio": 0.5,
        "flag": False,
        "nothing": None,
        "nested": {"list": [1, {"deep": [None, "on"]}], "empty-map": {}, "empty-list": []},
    }
    config = store.replace_plugin_config("p", settings)
    assert path.read_text(encoding="utf-8") == (
        "plugins:\n"
        "  configs:\n"
        "    p:\n"
        "      'yes': 'yes'\n"
        "      number-text: '10'\n"
        "      empty: ''\n"
        "      colon: 'a: b'\n"
        "      lines: |\n"
        "        first\n"
        "        second\n"
        "      unicode: héllo ✓\n"
        "      ratio: 0.5\n"
        "      flag: false\n"
        "      nothing:\n"
        "      nested:\n"
        "        list:\n"
        "          - 1\n"
        "          - deep:\n"
        "              - \n"
        "              - 'on'\n"
        "        empty-map: {}\n"
        "        empty-list: []\n"
    )
    assert config.plugin_entry("p").settings == settings
    assert HostConfig.load(path) == config


def test_a_new_string_keeps_the_quotes_of_the_one_it_replaces(tmp_path: Path) -> None:
    text = "plugins:\n  configs:\n    p:\n      a: 'x'\n      b: \"x\"\n      c: x\n"
    store, path = make_store(tmp_path, text)
    store.patch_plugin_config("p", {"a": "y", "b": "y", "c": "y"})
    assert path.read_text(encoding="utf-8") == (
        "plugins:\n  configs:\n    p:\n      a: 'y'\n      b: \"y\"\n      c: 'y'\n"
    )


def test_a_value_yaml_cannot_hold_is_refused(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    with pytest.raises(TypeError, match="cannot write a set"):
        store.patch_plugin_config("simple-c", {"mode": "fast", "bad": {1, 2}})
    assert path.read_bytes() == CONFIG.encode()
    store.set_enabled("simple-c", False)
    assert store.config.plugin_entry("simple-c").settings == {"mode": "safe"}


# validation before writing


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda store: store.patch_plugin_config("simple-c", {"priority": "x"}),
            "config.yaml: plugins.configs.simple-c.priority: expected an integer, got 'x'",
        ),
        (
            lambda store: store.patch_plugin_config("simple-c", {"enabled": "yes"}),
            "config.yaml: plugins.configs.simple-c.enabled: expected true or false, got 'yes'",
        ),
        (
            lambda store: store.replace_plugin_config("simple-c", {"mode": "x", "priority": "x"}),
            "config.yaml: plugins.configs.simple-c.priority: expected an integer, got 'x'",
        ),
        (
            lambda store: store.replace_plugin_config("simple-rust", {"store": "1.2.0"}),
            "config.yaml: plugins.configs.simple-rust.store: expected a mapping, got '1.2.0'",
        ),
        (
            lambda store: store.set_enabled("bad id", True),
            "config.yaml: plugins.configs.bad id: invalid plugin ID 'bad id': expected letters,"
            " digits, '.', '_' or '-', starting with a letter or digit, at most 128 characters",
        ),
        (
            lambda store: store.patch_plugin_config("-dash", {"mode": "x"}),
            "config.yaml: plugins.configs.-dash: invalid plugin ID '-dash'",
        ),
    ],
)
def test_an_invalid_change_is_refused_and_leaves_file_and_config_alone(
    tmp_path: Path, change: Callable[[ConfigStore], object], message: str
) -> None:
    store, path = make_store(tmp_path)
    config = store.config
    with pytest.raises(ConfigError) as caught:
        change(store)
    assert str(caught.value).replace(str(path), "config.yaml").startswith(message)
    assert path.read_bytes() == CONFIG.encode()
    assert store.config is config
    assert files_in(tmp_path) == ["config.yaml"]


def test_a_refused_change_is_not_written_by_the_next_one(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    with pytest.raises(ConfigError):
        store.patch_plugin_config("simple-c", {"mode": "fast", "priority": "x"})
    with pytest.raises(ConfigError):
        store.replace_plugin_config("simple-rust", {"priority": "high"})
    store.set_enabled("simple-rust", True)
    assert path.read_text(encoding="utf-8") == edited(
        "      enabled: false\n      priority: 20\n",
        "      enabled: true\n      priority: 20\n",
    )


# writing


def test_concurrent_changes_are_all_kept(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def patch(worker: int) -> None:
        start.wait()
        try:
            for n in range(50):
                store.patch_plugin_config(f"worker-{worker % 2}", {f"key-{worker}-{n}": n})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=patch, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    config = HostConfig.load(path)
    keys = {
        key
        for plugin_id in ("worker-0", "worker-1")
        for key in config.plugin_entry(plugin_id).settings
    }
    assert keys == {f"key-{worker}-{n}" for worker in range(8) for n in range(50)}
    assert config == store.config
    # The new entries went in between; everything the user wrote is still there.
    head, http, tail = CONFIG.partition("http:\n")
    text = path.read_text(encoding="utf-8")
    assert text.startswith(head)
    assert text.endswith(http + tail)


def test_readers_never_see_a_half_written_file(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    done = threading.Event()
    failures: list[BaseException] = []
    reads = 0

    def read() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                HostConfig.load(path)
            except BaseException as exc:
                failures.append(exc)
            reads += 1

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(60):
            store.patch_plugin_config("simple-c", {"counter": n, "padding": "x" * (n * 37)})
    finally:
        done.set()
        reader.join()
    assert failures == []
    assert reads > 0
    assert files_in(tmp_path) == ["config.yaml"]


def test_a_failed_write_leaves_no_temp_file_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, path = make_store(tmp_path)
    config = store.config

    def refuse(source: Any, target: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        store.set_enabled("simple-c", False)
    monkeypatch.undo()
    assert path.read_bytes() == CONFIG.encode()
    assert store.config is config
    assert files_in(tmp_path) == ["config.yaml"]
    store.patch_plugin_config("simple-c", {"mode": "fast"})
    assert store.config.plugin_entry("simple-c").enabled is True


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_the_files_permission_bits_are_kept(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    path.chmod(0o640)
    store.set_enabled("simple-c", False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_symlinked_config_stays_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "dotfiles").mkdir()
    target = tmp_path / "dotfiles" / "cliproxy.yaml"
    target.write_text(CONFIG, encoding="utf-8")
    link = tmp_path / "config.yaml"
    link.symlink_to(target)
    store = ConfigStore(link)
    store.set_enabled("simple-c", False)
    assert link.is_symlink()
    assert "enabled: false     # on by default" in target.read_text(encoding="utf-8")
    assert files_in(tmp_path / "dotfiles") == ["cliproxy.yaml"]


def test_crlf_line_endings_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(CONFIG.replace("\n", "\r\n").encode())
    store = ConfigStore(path)
    store.set_enabled("simple-c", False)
    expected = edited(
        "      enabled: true      # on by default\n", "      enabled: false     # on by default\n"
    )
    assert path.read_bytes() == expected.replace("\n", "\r\n").encode()


def test_the_files_indentation_is_kept(tmp_path: Path) -> None:
    text = (
        "plugins:\n"
        "    configs:\n"
        "        p:\n"
        "            hosts:\n"
        "            - a\n"
        "http:\n"
        "    allowed-hosts:\n"
        "    - b\n"
    )
    store, path = make_store(tmp_path, text)
    store.patch_plugin_config("p", {"extra": {"list": [1]}})
    assert path.read_text(encoding="utf-8") == edited(
        "            - a\n",
        "            - a\n            extra:\n                list:\n                - 1\n",
        text,
    )


def test_a_change_to_an_aliased_entry_does_not_reach_the_anchor(tmp_path: Path) -> None:
    text = "plugins:\n  configs:\n    a: &shared\n      mode: x\n    b: *shared\n"
    store, _ = make_store(tmp_path, text)
    config = store.patch_plugin_config("b", {"mode": "y"})
    assert config.plugin_entry("a").settings == {"mode": "x"}
    assert config.plugin_entry("b").settings == {"mode": "y"}
    config = store.patch_plugin_config("a", {"mode": "z"})
    assert config.plugin_entry("a").settings == {"mode": "z"}
    assert config.plugin_entry("b").settings == {"mode": "y"}


def test_a_change_to_an_entry_with_a_merge_key_keeps_the_merged_values(tmp_path: Path) -> None:
    text = "base: &base {mode: x, level: 1}\nplugins:\n  configs:\n    p:\n      <<: *base\n"
    store, path = make_store(tmp_path, text)
    config = store.set_enabled("p", True)
    assert config.plugin_entry("p").settings == {"mode": "x", "level": 1}
    assert HostConfig.load(path) == config


# snapshots


def test_each_change_gives_a_new_config_and_leaves_the_old_one_alone(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    before = store.config
    after = store.set_enabled("simple-c", False)
    assert after is store.config
    assert after is not before
    assert before.plugin_entry("simple-c").enabled is True
    assert after.plugin_entry("simple-c").enabled is False
    assert after.plugins_dir() == tmp_path / "plugins"


# hand edits


def test_a_hand_edit_is_read_before_a_change(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    by_hand = edited("  timeout-seconds: 30\n", "  timeout-seconds: 5   # by hand\n")
    path.write_text(by_hand, encoding="utf-8")
    config = store.set_enabled("simple-c", False)
    assert path.read_text(encoding="utf-8") == edited(
        "      enabled: true      # on by default\n",
        "      enabled: false     # on by default\n",
        by_hand,
    )
    assert config.http.timeout_seconds == 5


def test_a_hand_edit_of_the_same_size_is_noticed(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    before = path.stat()
    by_hand = edited('mode: "safe"', 'mode: "fast"')
    with path.open("r+", encoding="utf-8") as file:  # in place, as some editors save
        file.write(by_hand)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    store.set_enabled("simple-rust", True)
    assert 'mode: "fast"' in path.read_text(encoding="utf-8")
    assert store.config.plugin_entry("simple-c").settings == {"mode": "fast"}


def test_an_invalid_hand_edit_is_never_overwritten(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    config = store.config
    by_hand = edited("      priority: 10 ", "      priority: x  ")
    path.write_text(by_hand, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        store.set_enabled("simple-c", False)
    assert str(caught.value) == (
        f"{path}:10: plugins.configs.simple-c.priority: expected an integer, got 'x'"
    )
    assert path.read_text(encoding="utf-8") == by_hand
    assert store.config is config
    path.write_text(CONFIG, encoding="utf-8")
    assert store.set_enabled("simple-c", False).plugin_entry("simple-c").enabled is False


def test_reload_reads_a_hand_edit(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    before = store.config
    path.write_text(edited("      priority: 10 ", "      priority: 99 "), encoding="utf-8")
    config = store.reload()
    assert config is store.config
    assert config is not before
    assert config.plugin_entry("simple-c").priority == 99


def test_reload_of_an_invalid_file_keeps_the_current_config(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    config = store.config
    path.write_text("plugins: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML"):
        store.reload()
    assert store.config is config


def test_reload_validates_remote_management(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    path.write_text(CONFIG + "remote-management:\n  allow-remote: 'yes'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        store.reload()
    assert str(caught.value) == (
        f"{path}:31: remote-management.allow-remote: expected true or false, got 'yes'"
    )
    path.write_text(CONFIG + "remote-management:\n  allow-remote: true\n", encoding="utf-8")
    assert store.reload().remote_management.allow_remote is True


def test_reload_of_a_deleted_file_keeps_the_current_config(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    config = store.config
    path.unlink()
    with pytest.raises(ConfigError, match="config file not found"):
        store.reload()
    assert store.config is config


def test_a_deleted_file_is_written_back_by_the_next_change(tmp_path: Path) -> None:
    store, path = make_store(tmp_path)
    path.unlink()
    store.set_enabled("simple-c", False)
    assert path.read_text(encoding="utf-8") == edited(
        "      enabled: true      # on by default\n",
        "      enabled: false     # on by default\n",
    )


# the management key


SECRET_CONFIG = CONFIG + (
    "remote-management:\n"
    "  allow-remote: false\n"
    '  secret-key: "open sesame"   # the management key\n'
)


def test_a_plaintext_secret_key_is_protected_on_write(tmp_path: Path) -> None:
    store, path = make_store(tmp_path, SECRET_CONFIG, protect_secret=fake_hash)
    assert store.config.remote_management.secret_key == "open sesame"
    config = store.set_enabled("simple-c", False)
    assert path.read_text(encoding="utf-8").endswith(
        '  secret-key: "$2b$12$emases nepo" # the management key\n'
    )
    assert config.remote_management.secret_key == "$2b$12$emases nepo"


def test_a_protected_secret_key_is_left_as_it_is(tmp_path: Path) -> None:
    text = CONFIG + "remote-management:\n  secret-key: $2b$12$abc   # hashed\n"
    store, path = make_store(tmp_path, text, protect_secret=fake_hash)
    store.set_enabled("simple-c", False)
    assert path.read_text(encoding="utf-8") == edited(
        "      enabled: true      # on by default\n",
        "      enabled: false     # on by default\n",
        text,
    )


def test_without_protect_secret_the_key_is_written_as_it_is(tmp_path: Path) -> None:
    store, path = make_store(tmp_path, SECRET_CONFIG)
    store.set_enabled("simple-c", False)
    assert path.read_text(encoding="utf-8").endswith(
        '  secret-key: "open sesame"   # the management key\n'
    )


def test_an_empty_secret_key_is_not_protected(tmp_path: Path) -> None:
    def never(value: str) -> str:
        raise AssertionError(f"protect_secret called with {value!r}")

    text = CONFIG + 'remote-management:\n  secret-key: ""\n'
    store, path = make_store(tmp_path, text, protect_secret=never)
    store.set_enabled("simple-c", False)
    assert path.read_text(encoding="utf-8").endswith('  secret-key: ""\n')


def test_a_secret_key_that_cannot_be_protected_refuses_the_change(tmp_path: Path) -> None:
    def too_long(value: str) -> str:
        raise ValueError("management key is 80 bytes; bcrypt takes at most 72")

    store, path = make_store(tmp_path, SECRET_CONFIG, protect_secret=too_long)
    with pytest.raises(ConfigError) as caught:
        store.set_enabled("simple-c", False)
    assert str(caught.value) == (
        f"{path}: remote-management.secret-key: management key is 80 bytes; bcrypt takes at most 72"
    )
    assert path.read_bytes() == SECRET_CONFIG.encode()


def test_an_invalid_remote_management_section_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("remote-management:\n  secret-key: 1234\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        ConfigStore(path, protect_secret=fake_hash)
    assert str(caught.value) == (
        f"{path}:2: remote-management.secret-key: expected a string, got 1234 (put it in quotes)"
    )


@pytest.mark.parametrize(
    "number", ["5.219248898251513e+299", "8.53013247571732e+299", "-3.954605396479424e+298"]
)
def test_a_write_never_changes_a_float_it_did_not_touch(tmp_path: Path, number: str) -> None:
    # Found by the property test: ruamel rebuilt these from their digits one ulp off.
    text = f"other-program: {number}\nplugins:\n  configs:\n    x:\n      rate: [{number}]\n"
    store, path = make_store(tmp_path, text)
    store.patch_plugin_config("x", {"mode": "fast"})
    written = HostConfig.load(path)
    assert written.model_extra == {"other-program": float(number)}
    assert written.plugin_entry("x").settings == {"rate": [float(number)], "mode": "fast"}
