"""The audit log: one JSON line per management write, appended, fsynced, rotated by size.

Each line says when, who (client address, a fingerprint of the key, never the key), what
(action, route, plugin, outcome) and the SHA-256 of the config file before and after. The
file is rotated before a line would take it past `max_bytes` (audit.jsonl -> .1 -> .2 ...),
and only `max_files` rotated files are kept, so the log is bounded on disk. Every line has
a `seq`, continued across rotations and restarts, by which `page` reads it back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = [
    "MAX_PAGE",
    "AuditLog",
    "AuditPage",
    "config_digest",
    "key_fingerprint",
]

log = logging.getLogger(__name__)

# The most entries one page answers.
MAX_PAGE: Final = 500
# How much of a file's end is read to find the last seq at start.
_TAIL_BYTES: Final = 64 * 1024


def key_fingerprint(key: str | None) -> str | None:
    """A short fingerprint of a key (the first 16 hex digits of its SHA-256), which tells
    keys apart in the log without being the key; None for no key."""
    if not key:
        return None
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def config_digest(path: Path) -> str | None:
    """The SHA-256 (hex) of the config file as it is on disk; None when it is missing."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class AuditPage:
    """Entries newest first; `next` is the `before` that reads the page after (None: the
    end)."""

    entries: list[dict[str, Any]]
    next: int | None


class AuditLog:
    """An append-only JSONL file with size-bounded, count-bounded rotation. Thread-safe."""

    def __init__(self, path: Path, *, max_bytes: int, max_files: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._lock = threading.Lock()
        self._seq = self._last_seq()
        # A line torn by a crash must not swallow the next entry: end it first.
        self._torn = _ends_torn(path)

    def record(
        self,
        *,
        action: str,
        route: str,
        plugin: str | None,
        client: str | None,
        key: str | None,
        config_before: str | None,
        config_after: str | None,
        outcome: str = "ok",
        detail: str | None = None,
    ) -> dict[str, Any]:
        """Append one entry and answer it. `key` is a fingerprint (key_fingerprint), never
        a key; `outcome` is "ok" or the error code the write failed with; `detail` says
        more (e.g. the file installed). Raises OSError when the line cannot be written."""
        entry: dict[str, Any] = {
            "seq": 0,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "action": action,
            "route": route,
            "plugin": plugin,
            "client": client,
            "key": key,
            "config_before": config_before,
            "config_after": config_after,
            "outcome": outcome,
        }
        if detail is not None:
            entry["detail"] = detail
        with self._lock:
            entry["seq"] = self._seq + 1
            line = orjson.dumps(entry) + b"\n"
            self._append(line)
            self._seq += 1
        return entry

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line) > self.max_bytes:
            self._rotate()
            self._torn = False
        if self._torn:
            line = b"\n" + line
            self._torn = False
        # O_APPEND: every write lands at the end, whoever else holds the file open.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        """audit.jsonl -> .1, .1 -> .2, ...; the file past max_files is dropped."""
        self._rotated(self.max_files).unlink(missing_ok=True)
        for n in range(self.max_files - 1, 0, -1):
            older = self._rotated(n)
            if older.exists():
                older.rename(self._rotated(n + 1))
        self.path.rename(self._rotated(1))

    def _rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def files(self) -> list[Path]:
        """The log's files, newest first (the current one, then .1, .2, ...)."""
        paths = [self.path, *(self._rotated(n) for n in range(1, self.max_files + 1))]
        return [p for p in paths if p.exists()]

    def _last_seq(self) -> int:
        """The seq of the newest entry on disk, so that numbering goes on after a restart."""
        for path in self.files():
            with path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - _TAIL_BYTES))
                lines = fh.read().splitlines()
            for line in reversed(lines):
                entry = _parse(line)
                if entry is not None:
                    return int(entry["seq"])
        return 0

    def page(
        self, *, plugin: str | None = None, before: int | None = None, limit: int = 100
    ) -> AuditPage:
        """Up to `limit` (at most MAX_PAGE) entries with seq below `before`, newest first,
        only the plugin's when `plugin` is given. Reads at most the files the rotation
        keeps, so a page costs at most (max_files + 1) x max_bytes of reading."""
        limit = max(1, min(limit, MAX_PAGE))
        found: list[dict[str, Any]] = []
        for entry in self._newest_first():
            if before is not None and entry["seq"] >= before:
                continue
            if plugin is not None and entry.get("plugin") != plugin:
                continue
            if len(found) == limit:
                return AuditPage(found, found[-1]["seq"])
            found.append(entry)
        return AuditPage(found, None)

    def _newest_first(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            files = self.files()
        # A rotation while we read renames the files under us: an entry seen twice (or
        # one older file read again) is skipped by its seq, which only goes down.
        floor: int | None = None
        for path in files:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # rotated away while we read: its entries are in the next file
            for line in reversed(data.splitlines()):
                entry = _parse(line)
                if entry is not None and (floor is None or entry["seq"] < floor):
                    floor = entry["seq"]
                    yield entry


def _ends_torn(path: Path) -> bool:
    """Whether the file's last line has no newline (a write cut short)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _parse(line: bytes) -> dict[str, Any] | None:
    """An entry, or None for a line that is not one (a torn last line after a crash)."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
        return None
    return entry
