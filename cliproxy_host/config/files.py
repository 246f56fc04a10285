"""The config file on disk: read as text with a stamp of its version, written atomically."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

Stamp = tuple[int, int, int, int]


def stamp(status: os.stat_result) -> Stamp:
    """What changes when anyone rewrites the file: a new inode (editors that save by
    renaming, and our own writes), or a new size or mtime (editors that write in place)."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def stamp_of(path: Path) -> Stamp | None:
    """The file's stamp now, or None if there is no such file."""
    try:
        return stamp(path.stat())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class FileText:
    text: str  # with "\n" line breaks, whatever the file used
    crlf: bool  # the file used "\r\n"; a rewrite keeps them
    stamp: Stamp | None  # None: there is no file


def read_file(path: Path, source: str, *, limit: int) -> FileText | None:
    """The file's text, or None if there is no such file; a file over `limit` bytes is
    refused unread beyond the limit."""
    try:
        with path.open("rb") as file:
            # Taken from the open file, so the stamp belongs to exactly these bytes.
            taken = stamp(os.fstat(file.fileno()))
            raw = file.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from None
    if len(raw) > limit:
        raise ConfigError(
            f"{source}: config file is larger than {limit} bytes, the limit of a config file:"
            " move large plugin data to files of their own"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc.reason})") from None
    crlf = "\r\n" in text
    return FileText(text.replace("\r\n", "\n").replace("\r", "\n"), crlf, taken)


def read_existing_file(path: Path, source: str, *, limit: int) -> FileText:
    """The file's text; a missing file is an error."""
    file = read_file(path, source, limit=limit)
    if file is None:
        raise ConfigError(f"{source}: config file not found")
    return file


_TEMP_SUFFIX = ".tmp"
# A temp file this old is left by a write that was killed (a write takes milliseconds).
STALE_TEMP_SECONDS = 60.0


def remove_stale_temps(path: Path, *, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete the temp files of writes to `path` that a killed process left behind:
    ours by name (`.<name>.<random>.tmp` beside the file) and older than `older_than`
    seconds. Answers those deleted; one that cannot be deleted is left alone."""
    target = path.resolve()
    prefix = _temp_prefix(target)
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(_TEMP_SUFFIX)):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and (
                now - entry.stat(follow_symlinks=False).st_mtime > older_than
            ):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


# A new file may come to hold the management key's hash: readable by its owner only.
_NEW_FILE_MODE = 0o600


def write_atomically(path: Path, data: bytes) -> Stamp:
    """Replace the file's bytes so that a reader sees the old file or the new one, never a
    mix, and a crash leaves one of the two on disk. Returns the new file's stamp."""
    # Through a symlink (a config kept in a dotfiles repo): the link stays, its target changes.
    target = path.resolve()
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = _NEW_FILE_MODE
    try:
        return _write_via_temp(target, data, mode)
    except OSError as exc:
        # Named after the file the operator knows, not our temp file beside it.
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def _write_via_temp(target: Path, data: bytes, mode: int) -> Stamp:
    handle, temp = tempfile.mkstemp(
        prefix=_temp_prefix(target), suffix=_TEMP_SUFFIX, dir=target.parent
    )
    try:
        with os.fdopen(handle, "wb") as file:
            os.chmod(temp, mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            # The rename keeps inode, size and mtime: this is the stamp the file will have.
            written = stamp(os.fstat(file.fileno()))
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_directory(target.parent)
    return written


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable. Windows has no directory handles to flush, and some
    file systems refuse; the new file is in place either way, so that is no error."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
