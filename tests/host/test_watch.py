"""Watcher: real files in a temporary directory, watched through watchfiles' own backend."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cliproxy_host.host.watch import Changes, Watcher

# Generous: the waits end as soon as the expected batch arrives, so this only bounds failures.
TIMEOUT = 5.0
# How long to keep listening for stray batches after the expected one arrived.
SETTLE = 0.5


class Recorder:
    """The on_change callback of a test: keeps every batch for the test to wait on."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Changes] = queue.Queue()
        self.seen: list[Changes] = []

    def __call__(self, changes: Changes) -> None:
        self._queue.put(changes)

    def until(self, done: Callable[[list[Changes]], bool]) -> list[Changes]:
        """Collect batches until done(all batches so far) holds; fail after TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        while not done(self.seen):
            try:
                self.seen.append(self._queue.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                pytest.fail(f"expected changes did not arrive within {TIMEOUT} s; got {self.seen}")
        return self.seen

    def settle(self) -> list[Changes]:
        """Collect whatever else arrives until SETTLE passes without a batch."""
        while True:
            try:
                self.seen.append(self._queue.get(timeout=SETTLE))
            except queue.Empty:
                return self.seen


def files(batches: list[Changes]) -> set[Path]:
    return {path for batch in batches for path in batch.plugin_files}


def config_seen(batches: list[Changes]) -> bool:
    return any(batch.config_changed for batch in batches)


def has_files(*expected: Path) -> Callable[[list[Changes]], bool]:
    return lambda batches: set(expected) <= files(batches)


@dataclass(frozen=True)
class Layout:
    config: Path
    plugins: Path

    def watcher(self, on_change: Callable[[Changes], None]) -> Watcher:
        return Watcher(self.config, self.plugins, on_change)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    config = tmp_path / "config.yaml"
    config.write_text("plugins: {}\n")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    return Layout(config, plugins)


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cliproxy-watch-")]


def test_config_written_in_place_right_after_start_is_reported(layout: Layout) -> None:
    recorder = Recorder()
    with layout.watcher(recorder):
        layout.config.write_text("plugins: {a: {enabled: true}}\n")
        recorder.until(config_seen)
    assert files(recorder.seen) == set()


def test_config_replaced_atomically_is_one_config_change_without_temp_file(
    layout: Layout,
) -> None:
    recorder = Recorder()
    with layout.watcher(recorder):
        temp = layout.config.with_name(".config.yaml.tmp")
        temp.write_text("plugins: {b: {enabled: true}}\n")
        os.replace(temp, layout.config)
        recorder.until(config_seen)
        batches = recorder.settle()
    assert 1 <= len(batches) <= 3
    assert all(batch == Changes(config_changed=True, plugin_files=frozenset()) for batch in batches)


def test_config_deleted_and_recreated_is_reported(layout: Layout) -> None:
    recorder = Recorder()
    with layout.watcher(recorder):
        layout.config.unlink()
        layout.config.write_text("plugins: {}\n")
        recorder.until(config_seen)
    assert files(recorder.seen) == set()


def test_other_files_next_to_the_config_are_ignored(layout: Layout) -> None:
    recorder = Recorder()
    with layout.watcher(recorder):
        layout.config.with_name("other.yaml").write_text("x: 1\n")
        layout.config.with_name(".config.yaml.swp").write_text("x")
        layout.config.write_text("plugins: {}\n")
        recorder.until(config_seen)
        recorder.settle()
    assert all(batch.config_changed for batch in recorder.seen)


def test_new_plugin_in_new_platform_dirs_is_reported(layout: Layout) -> None:
    recorder = Recorder()
    with layout.watcher(recorder):
        # Written right after mkdir, before the OS can have added a watch for the new dirs.
        platform_dir = layout.plugins / "linux" / "amd64"
        platform_dir.mkdir(parents=True)
        plugin = platform_dir / "echo-v1.0.0.so"
        plugin.write_bytes(b"\x7fELF")
        recorder.until(has_files(plugin))
        later = platform_dir / "other.so"
        later.write_bytes(b"\x7fELF")
        recorder.until(has_files(later))
    assert not any(batch.config_changed for batch in recorder.seen)


def test_plugin_written_as_tmp_then_renamed_is_reported_by_final_name_only(
    layout: Layout,
) -> None:
    platform_dir = layout.plugins / "linux" / "amd64"
    platform_dir.mkdir(parents=True)
    recorder = Recorder()
    with layout.watcher(recorder):
        temp = platform_dir / "echo.so.tmp"
        temp.write_bytes(b"\x7fELF")
        os.replace(temp, platform_dir / "echo.so")
        recorder.until(has_files(platform_dir / "echo.so"))
        recorder.settle()
    assert files(recorder.seen) == {platform_dir / "echo.so"}


def test_only_library_files_are_reported_in_any_case(layout: Layout) -> None:
    recorder = Recorder()
    with layout.watcher(recorder):
        for name in ["README.md", "echo", "echo.so.swp", "echo.so.swx", "echo.so~", ".echo.so"]:
            (layout.plugins / name).write_bytes(b"x")
        hidden = layout.plugins / ".staging"
        hidden.mkdir()
        (hidden / "staged.so").write_bytes(b"x")
        libraries = [layout.plugins / name for name in ["a.so", "B.DLL", "c.Dylib"]]
        for library in libraries:
            library.write_bytes(b"x")
        recorder.until(has_files(*libraries))
        recorder.settle()
    assert files(recorder.seen) == set(libraries)


def test_files_present_at_start_are_not_reported(layout: Layout) -> None:
    platform_dir = layout.plugins / "linux" / "amd64"
    platform_dir.mkdir(parents=True)
    (platform_dir / "old.so").write_bytes(b"x")
    recorder = Recorder()
    with layout.watcher(recorder):
        layout.config.write_text("plugins: {}\n")
        recorder.until(config_seen)
        recorder.settle()
    assert files(recorder.seen) == set()


def test_directory_moved_in_and_out_is_reported_file_by_file(
    layout: Layout, tmp_path: Path
) -> None:
    staging = tmp_path / "staging"
    (staging / "amd64").mkdir(parents=True)
    (staging / "amd64" / "echo.so").write_bytes(b"x")
    (staging / "amd64" / "notes.txt").write_bytes(b"x")
    moved = layout.plugins / "linux" / "amd64" / "echo.so"
    recorder = Recorder()
    with layout.watcher(recorder):
        os.rename(staging, layout.plugins / "linux")
        moved_in = recorder.until(has_files(moved))
        assert files(moved_in) == {moved}
        count = len(moved_in)
        os.rename(layout.plugins / "linux", tmp_path / "retired")
        recorder.until(lambda batches: has_files(moved)(batches[count:]))


def test_plugins_dir_created_after_start_is_watched(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("plugins: {}\n")
    plugins = tmp_path / "deploy" / "current" / "plugins"
    recorder = Recorder()
    with Watcher(config, plugins, recorder):
        assert not plugins.parent.parent.exists(), "the watcher must not create plugins_dir"
        platform_dir = plugins / "linux" / "amd64"
        platform_dir.mkdir(parents=True)
        first = platform_dir / "echo.so"
        first.write_bytes(b"x")
        recorder.until(has_files(first))
        second = platform_dir / "second.so"
        second.write_bytes(b"x")
        recorder.until(has_files(second))


def test_plugins_dir_removed_and_recreated_is_still_watched(layout: Layout) -> None:
    platform_dir = layout.plugins / "linux" / "amd64"
    platform_dir.mkdir(parents=True)
    old = platform_dir / "old.so"
    old.write_bytes(b"x")
    recorder = Recorder()
    with layout.watcher(recorder):
        shutil.rmtree(layout.plugins)
        recorder.until(has_files(old))
        platform_dir.mkdir(parents=True)
        new = platform_dir / "new.so"
        new.write_bytes(b"x")
        recorder.until(has_files(new))


def test_reported_paths_are_absolute_under_a_relative_plugins_dir(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(layout.plugins.parent)
    recorder = Recorder()
    with Watcher(Path(layout.config.name), Path(layout.plugins.name), recorder):
        (layout.plugins / "echo.so").write_bytes(b"x")
        layout.config.write_text("plugins: {}\n")
        recorder.until(lambda b: config_seen(b) and has_files(layout.plugins / "echo.so")(b))


def test_callback_exception_is_logged_and_later_changes_still_arrive(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    calls: list[Changes] = []

    def fail_first(changes: Changes) -> None:
        calls.append(changes)
        recorder(changes)
        if len(calls) == 1:
            raise RuntimeError("reload exploded")

    caplog.set_level(logging.ERROR, logger="cliproxy_host.host.watch")
    with layout.watcher(fail_first):
        layout.config.write_text("plugins: {}\n")
        recorder.until(config_seen)
        plugin = layout.plugins / "echo.so"
        plugin.write_bytes(b"x")
        recorder.until(has_files(plugin))
    failures = [r for r in caplog.records if r.name == "cliproxy_host.host.watch" and r.exc_info]
    assert len(failures) == 1
    assert "reload exploded" in str(failures[0].exc_info[1])  # type: ignore[index]


def test_changes_made_while_the_callback_runs_come_in_the_next_batch(layout: Layout) -> None:
    recorder = Recorder()
    in_callback = threading.Event()
    release = threading.Event()

    def slow_first(changes: Changes) -> None:
        recorder(changes)
        if not in_callback.is_set():
            in_callback.set()
            release.wait(TIMEOUT)

    with layout.watcher(slow_first):
        layout.config.write_text("plugins: {}\n")
        assert in_callback.wait(TIMEOUT)
        plugin = layout.plugins / "echo.so"
        plugin.write_bytes(b"x")
        # Lets the watcher see the write while the callback still blocks; not a timing assertion.
        time.sleep(SETTLE)
        release.set()
        batches = recorder.until(has_files(plugin))
    assert files(batches[:1]) == set()


def test_stop_returns_promptly_and_ends_the_threads(layout: Layout) -> None:
    watcher = layout.watcher(Recorder())
    watcher.start()
    assert len(watch_threads()) == 3
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 2.0
    assert watch_threads() == []
    watcher.stop()


def test_stop_from_inside_the_callback_does_not_deadlock(layout: Layout) -> None:
    stopped = threading.Event()
    watcher: Watcher

    def stop_now(changes: Changes) -> None:
        watcher.stop()
        stopped.set()

    watcher = layout.watcher(stop_now)
    watcher.start()
    layout.config.write_text("plugins: {}\n")
    assert stopped.wait(TIMEOUT)
    watcher.stop()
    assert watch_threads() == []


def test_missing_config_dir_fails_start_and_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    watcher = Watcher(missing / "config.yaml", tmp_path / "plugins", Recorder())
    with pytest.raises(OSError, match=r"hot reload cannot watch .*nowhere"):
        watcher.start()
    assert watch_threads() == []


def test_negative_debounce_is_rejected(layout: Layout) -> None:
    with pytest.raises(ValueError, match="debounce_ms"):
        Watcher(layout.config, layout.plugins, Recorder(), debounce_ms=-1)


def test_a_watcher_starts_only_once(layout: Layout) -> None:
    never_started = layout.watcher(Recorder())
    never_started.stop()
    with pytest.raises(RuntimeError, match="starts only once"):
        never_started.start()
    with layout.watcher(Recorder()) as watcher, pytest.raises(RuntimeError, match="only once"):
        watcher.start()
    assert watch_threads() == []


def test_a_distribution_installed_or_removed_in_a_site_dir_is_reported(
    layout: Layout, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    recorder = Recorder()
    with Watcher(layout.config, layout.plugins, recorder, wheel_dirs=[site, tmp_path / "no"]):
        (site / "notes.txt").write_text("not a distribution\n")
        (site / "some_pkg").mkdir()
        assert not any(batch.wheels_changed for batch in recorder.settle())
        info = site / "some_pkg-1.0.dist-info"
        info.mkdir()
        recorder.until(lambda batches: any(batch.wheels_changed for batch in batches))
        recorder.seen.clear()
        shutil.rmtree(info)
        recorder.until(lambda batches: any(batch.wheels_changed for batch in batches))
    assert files(recorder.seen) == set()


def test_a_site_dir_that_cannot_be_watched_is_only_a_warning(
    layout: Layout, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    recorder = Recorder()
    watcher = Watcher(layout.config, layout.plugins, recorder, wheel_dirs=[site])
    site.rmdir()  # gone between the host's start and its watch
    with caplog.at_level(logging.WARNING), watcher:
        assert "plugin wheels installed while the host runs" in caplog.text
        layout.config.write_text("plugins: {c: {enabled: true}}\n")  # the rest still watched
        recorder.until(config_seen)
