"""The atomic install of a library into the plugins dir: checked, 0755, fsynced, renamed
over `<plugins-dir>/<os>/<arch>/<id>-v<version><ext>`, undoable until the config is written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..binfmt import load_problem
from ..discovery import library_suffix

Undo = Callable[[], None]


def target_path(plugins_dir: Path, plugin_id: str, version: str, goos: str, goarch: str) -> Path:
    return plugins_dir / goos / goarch / f"{plugin_id}-v{version}{library_suffix(goos)}"


def staging_file(directory: Path) -> tuple[int, Path]:
    """A new hidden temp file in `directory` (no library suffix, so discovery skips it)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".store-", suffix=".lib-part")
    return fd, Path(name)


def library_problem(staged: Path) -> str | None:
    """Why the staged file cannot be loaded by this host (its header), or None."""
    return load_problem(staged)


@dataclass(frozen=True)
class Placement:
    """A staged library and where it goes; `place()` renames it there and returns the undo."""

    staged: Path
    target: Path

    @property
    def backup(self) -> Path:
        return self.target.with_name(f".{self.target.name}.previous")

    def place(self) -> Undo:
        """Rename the staged file over the target; the returned undo puts back what was
        there (nothing, or the file it replaced). Call `finish()` once the change holds."""
        os.chmod(self.staged, 0o755)
        with self.staged.open("rb") as fh:
            os.fsync(fh.fileno())
        replaced = self.target.exists()
        if replaced:
            # A reinstall of one version: the old file is kept until the config is written.
            self.backup.unlink(missing_ok=True)
            os.link(self.target, self.backup)
        os.replace(self.staged, self.target)
        _fsync_dir(self.target.parent)

        def undo() -> None:
            if replaced:
                os.replace(self.backup, self.target)
            else:
                self.target.unlink(missing_ok=True)

        return undo

    def finish(self) -> None:
        self.backup.unlink(missing_ok=True)

    def discard(self) -> None:
        self.staged.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
