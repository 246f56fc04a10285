"""File watching for hot reload: reports config and plugin-library changes to a callback,
and distributions installed or removed where Python finds them (plugin wheels)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import watchfiles

logger = logging.getLogger(__name__)

LIBRARY_SUFFIXES: Final = frozenset({".so", ".dylib", ".dll"})
# Editors and atomic writers (ours write `.<name>.tmp`, then rename) leave these behind.
_TEMPORARY_ENDINGS: Final = (".tmp", "~", ".swp", ".swx")
# What an installer adds to or removes from a site dir: a distribution's metadata, and the
# .pth files of editable installs.
_DISTRIBUTION_ENDINGS: Final = (".dist-info", ".egg-info", ".pth")
# watchfiles polls the stop flag once per step, so this bounds how long stop() takes.
_STEP_MS: Final = 50
_RETRY_S: Final = 1.0

_Batch = set[tuple[watchfiles.Change, str]]
# Inode, size and mtime: enough to tell a file that was replaced or rewritten.
_Signature = tuple[int, int, int]


@dataclass(frozen=True)
class Changes:
    """One debounced batch of changes worth a reload."""

    config_changed: bool
    """The config file was written, replaced (atomic rename) or deleted/recreated."""
    plugin_files: frozenset[Path]
    """Library files added, changed or removed under plugins_dir (absolute, under it as given)."""
    wheels_changed: bool = False
    """A distribution was installed, upgraded or removed in a watched site dir."""


class Watcher:
    """Watches one config file, a plugins directory and the site dirs where installed
    distributions (plugin wheels) live; calls on_change once per batch.

    The callback runs on the watcher's dispatch thread, one call at a time; changes that
    arrive while it runs come in the next call. A missing plugins_dir is not created: its
    nearest existing parent is watched until it appears, and again if it is removed. A
    site dir is watched only if it exists at start, and only for distributions' metadata
    coming and going, not recursively.
    """

    def __init__(
        self,
        config_path: Path,
        plugins_dir: Path,
        on_change: Callable[[Changes], None],
        *,
        wheel_dirs: Sequence[Path] = (),
        debounce_ms: int = 150,
    ) -> None:
        if debounce_ms < 0:
            raise ValueError(f"debounce_ms must be >= 0, got {debounce_ms}")
        # abspath, not resolve: reported paths stay under plugins_dir as the caller named it.
        self._config_path = Path(os.path.abspath(config_path))
        self._plugins_dir = Path(os.path.abspath(plugins_dir))
        self._on_change = on_change
        self._wheel_dirs = sorted(
            {Path(os.path.abspath(d)) for d in wheel_dirs if os.path.isdir(d)}
        )
        self._debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._inbox = _Inbox()
        self._index = _LibraryIndex(self._plugins_dir)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start watching; returns once changes can no longer be missed."""
        if self._threads or self._stop.is_set():
            raise RuntimeError("a Watcher starts only once; create a new one")
        streams = [
            _Stream("config", self._config_target, self._take_config, self._catch_up_config),
            _Stream("plugins", self._plugins_target, self._take_plugins, self._catch_up_plugins),
        ]
        if self._wheel_dirs:  # one OS watch for them all: inotify instances are few
            streams.append(
                _Stream(
                    "site", self._site_target, self._take_site, self._catch_up_site, required=False
                )
            )
        for stream in streams:
            self._spawn(f"cliproxy-watch-{stream.name}", partial(self._run, stream))
        for stream in streams:
            stream.startup.wait()
        for stream in streams:
            if stream.failure is not None and not stream.required:
                root, error = stream.failure
                logger.warning(
                    "cannot watch %s (%s): plugin wheels installed while the host runs are "
                    "taken at the next change of the config or the plugins dir",
                    root,
                    error,
                )
            elif stream.failure is not None:
                self.stop()
                root, error = stream.failure
                raise OSError(f"hot reload cannot watch {root}: {error}") from error
        # Taken after the watches are live, so a file is either in it or reported later.
        self._index.resync(Path())
        self._spawn("cliproxy-watch-dispatch", self._dispatch)

    def stop(self) -> None:
        """Stop watching; waits for a running callback to return. Safe to call twice."""
        self._stop.set()
        self._inbox.close()
        for thread in self._threads:
            # The callback itself may stop the watcher; a thread cannot join itself.
            if thread is not threading.current_thread():
                thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, stream: _Stream) -> None:
        """Keep one OS watch running until stop(), re-creating it when it must move or fails."""
        was_live = False
        while not self._stop.is_set():
            flag = _LiveFlag(self._stop, stream.catch_up if was_live else stream.startup.set)
            root: Path | str = f"the {stream.name} directory"
            try:
                roots, recursive = stream.target()
                root = ", ".join(map(str, roots))
                batches = watchfiles.watch(
                    *roots,
                    watch_filter=None,
                    recursive=recursive,
                    debounce=self._debounce_ms,
                    step=_STEP_MS,
                    # The timeout path clears changes that land between its checks: never time out.
                    rust_timeout=0,
                    stop_event=flag,
                )
                with closing(batches):
                    for batch in batches:
                        if stream.take(batch):
                            break
            except Exception as error:
                if not (was_live or flag.live):
                    stream.failure = (root, error)
                    break
                logger.warning("watching %s failed; retrying", root, exc_info=True)
                self._stop.wait(_RETRY_S)
            was_live = was_live or flag.live
        # Also when stopped or failed before going live: start() must never wait forever.
        stream.startup.set()

    def _dispatch(self) -> None:
        while (taken := self._inbox.take()) is not None:
            config_changed, plugin_paths, wheels_changed = taken
            files: set[Path] = set()
            for rel in plugin_paths:
                files |= self._index.resync(rel)
                # Every event on a library counts, even one that leaves its signature as it was.
                if _is_library(rel.name):
                    files.add(rel)
            if not (config_changed or files or wheels_changed):
                continue
            changes = Changes(
                config_changed, frozenset(self._plugins_dir / f for f in files), wheels_changed
            )
            try:
                self._on_change(changes)
            except Exception:
                logger.exception("hot-reload callback failed for %s", changes)

    def _config_target(self) -> tuple[tuple[Path, ...], bool]:
        # The directory, not the file: an atomic rename replaces the inode a file watch holds.
        return (self._config_path.parent.resolve(),), False

    def _take_config(self, batch: _Batch) -> bool:
        # Matching the exact name is what keeps the writers' temporaries out.
        config = self._config_path.parent.resolve() / self._config_path.name
        if any(Path(path) == config for _, path in batch):
            self._inbox.post(config_changed=True)
        return False

    def _catch_up_config(self) -> None:
        # The watch was down for a while; the config may have changed meanwhile.
        self._inbox.post(config_changed=True)

    def _plugins_target(self) -> tuple[tuple[Path, ...], bool]:
        real = self._plugins_dir.resolve()
        if real.is_dir():
            return (real,), True
        # Non-recursive, so a missing plugins_dir never means watching a large tree above it.
        return (next(parent for parent in real.parents if parent.is_dir()),), False

    def _take_plugins(self, batch: _Batch) -> bool:
        """Post the changes under plugins_dir; True when the watch must move."""
        real = self._plugins_dir.resolve()
        must_move = False
        found: set[Path] = set()
        for _, raw in batch:
            path = Path(raw)
            if path == real or path in real.parents:
                # plugins_dir (or a directory on the way to it) appeared, vanished or was replaced.
                must_move = True
            elif path.is_relative_to(real):
                rel = path.relative_to(real)
                if not any(_is_temporary(part) for part in rel.parts):
                    found.add(rel)
        if found:
            self._inbox.post(plugin_paths=found)
        return must_move

    def _catch_up_plugins(self) -> None:
        self._inbox.post(plugin_paths=[Path()])

    def _site_target(self) -> tuple[tuple[Path, ...], bool]:
        # Not recursive: a distribution comes and goes as an entry of a site dir itself.
        return tuple(directory.resolve() for directory in self._wheel_dirs), False

    def _take_site(self, batch: _Batch) -> bool:
        if any(Path(path).name.endswith(_DISTRIBUTION_ENDINGS) for _, path in batch):
            self._inbox.post(wheels_changed=True)
        return False

    def _catch_up_site(self) -> None:
        self._inbox.post(wheels_changed=True)


@dataclass
class _Stream:
    """One OS watch: where it points, how it reads a batch, how it catches up after a gap."""

    name: str
    target: Callable[[], tuple[tuple[Path, ...], bool]]  # what to watch, and recursively
    take: Callable[[_Batch], bool]
    catch_up: Callable[[], None]
    required: bool = True  # start() fails without it (else it only logs a WARNING)
    startup: threading.Event = field(default_factory=threading.Event)
    failure: tuple[Path | str, Exception] | None = None


class _LiveFlag:
    """The stop_event handed to watchfiles, which also tells when the OS watch is live.

    watchfiles polls it only from inside its wait loop, which begins after the OS watch is
    installed; from the first poll on, no change can be missed.
    """

    def __init__(self, stop: threading.Event, on_live: Callable[[], None]) -> None:
        self._stop = stop
        self._on_live = on_live
        self.live = False

    def is_set(self) -> bool:
        if not self.live:
            self.live = True
            self._on_live()
        return self._stop.is_set()


class _Inbox:
    """Changes posted by the watch threads and not yet handed to the callback."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._config_changed = False
        self._plugin_paths: set[Path] = set()
        self._wheels_changed = False
        self._closed = False

    def post(
        self,
        *,
        config_changed: bool = False,
        plugin_paths: Iterable[Path] = (),
        wheels_changed: bool = False,
    ) -> None:
        with self._cond:
            self._config_changed |= config_changed
            self._plugin_paths.update(plugin_paths)
            self._wheels_changed |= wheels_changed
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def take(self) -> tuple[bool, set[Path], bool] | None:
        """Wait for posted changes and take them all; None once closed."""
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    self._closed
                    or self._config_changed
                    or bool(self._plugin_paths)
                    or self._wheels_changed
                )
            )
            if self._closed:
                return None
            taken = self._config_changed, self._plugin_paths, self._wheels_changed
            self._config_changed, self._plugin_paths, self._wheels_changed = False, set(), False
            return taken


class _LibraryIndex:
    """The library files last seen under plugins_dir, keyed by relative path.

    The OS reports a directory moved in or out as one event, and files written into a new
    directory before its watch is installed not at all; comparing a scan with this index
    turns both into the file-by-file changes they are.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._seen: dict[Path, _Signature] = {}

    def resync(self, rel: Path) -> set[Path]:
        """Bring the entries at or under rel up to date; return the ones that differed."""
        on_disk = self._scan(rel)
        stale = [known for known in self._seen if known == rel or rel in known.parents]
        changed = {known for known in stale if known not in on_disk}
        changed |= {path for path, sig in on_disk.items() if self._seen.get(path) != sig}
        for known in stale:
            del self._seen[known]
        self._seen.update(on_disk)
        return changed

    def _scan(self, rel: Path) -> dict[Path, _Signature]:
        top = self._root / rel
        found: dict[Path, _Signature] = {}
        if os.path.isdir(top):
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [name for name in dirnames if not _is_temporary(name)]
                base = rel / os.path.relpath(dirpath, top)
                for name in filenames:
                    if _is_library(name) and not _is_temporary(name):
                        _record(found, base / name, Path(dirpath, name))
        elif _is_library(rel.name):
            _record(found, rel, top)
        return found


def _record(found: dict[Path, _Signature], rel: Path, path: Path) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return  # gone again already; its removal is what the index will see
    found[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)


def _is_library(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in LIBRARY_SUFFIXES


def _is_temporary(name: str) -> bool:
    return name.startswith(".") or name.endswith(_TEMPORARY_ENDINGS)
