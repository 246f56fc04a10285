"""The store's zip layout: one library at the archive's root, named `<id><ext>` or
`<id>-v<version><ext>`; an entry that is absolute, uses backslashes, climbs out of the
archive (zip slip) or is not a regular file refuses the whole archive."""

from __future__ import annotations

import posixpath
import stat
import zipfile
from pathlib import Path
from typing import BinaryIO, Final

from ..discovery import library_suffix

_LIBRARY_EXTENSIONS: Final = (".so", ".dylib", ".dll")
_CHUNK: Final = 64 * 1024


class UnpackFailed(Exception):
    """Why the archive cannot be installed (names the entry and the layout expected)."""


def _clean(name: str) -> str:
    if not name.strip():
        raise UnpackFailed("zip entry has an empty name")
    if "\\" in name:
        raise UnpackFailed(f"zip entry {name!r} uses backslashes as path separators")
    if name.startswith("/"):
        raise UnpackFailed(f"zip entry {name!r} is an absolute path")
    cleaned = posixpath.normpath(name)
    if cleaned in (".", "..") or cleaned.startswith("../"):
        raise UnpackFailed(f"zip entry {name!r} points outside the archive")
    return cleaned


def _regular(info: zipfile.ZipInfo) -> bool:
    kind = stat.S_IFMT(info.external_attr >> 16)
    return kind in (0, stat.S_IFREG)


def library_entry(
    archive: zipfile.ZipFile, plugin_id: str, version: str, goos: str
) -> zipfile.ZipInfo:
    """The one entry to install; UnpackFailed if the archive breaks the layout anywhere."""
    ext = library_suffix(goos)
    names = (f"{plugin_id}{ext}", f"{plugin_id}-v{version}{ext}")
    target: zipfile.ZipInfo | None = None
    for info in archive.infolist():
        cleaned = _clean(info.filename)
        if info.is_dir():
            continue
        if not _regular(info):
            raise UnpackFailed(f"zip entry {info.filename!r} is not a regular file")
        if not cleaned.lower().endswith(_LIBRARY_EXTENSIONS):
            continue
        if cleaned not in names:
            if posixpath.basename(cleaned) in names:
                raise UnpackFailed(f"zip entry {info.filename!r}: the library must be at the root")
            raise UnpackFailed(
                f"zip entry {info.filename!r}: the library must be named {names[0]} or {names[1]}"
            )
        if target is not None:
            raise UnpackFailed(f"the zip holds both {target.filename} and {info.filename}")
        target = info
    if target is None:
        raise UnpackFailed(f"the zip holds no {names[0]} or {names[1]} at its root")
    return target


def extract_library(
    source: Path, out: BinaryIO, *, plugin_id: str, version: str, goos: str, cap: int
) -> None:
    """Write the archive's library into `out`, at most `cap` bytes (a zip bomb stops there)."""
    try:
        with zipfile.ZipFile(source) as archive:
            entry = library_entry(archive, plugin_id, version, goos)
            if entry.file_size > cap:
                raise UnpackFailed(
                    f"{entry.filename} unpacks to {entry.file_size} bytes, more than {cap}"
                )
            written = 0
            with archive.open(entry) as data:
                while chunk := data.read(_CHUNK):
                    written += len(chunk)
                    if written > cap:
                        raise UnpackFailed(f"{entry.filename} unpacks to more than {cap} bytes")
                    out.write(chunk)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise UnpackFailed(f"not a readable zip archive: {exc}") from None


def is_zip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"PK\x03\x04"
