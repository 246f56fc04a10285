"""The replica's local copies: the last good config it read from the database, and the
files it took from there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..config.files import write_atomically

Rows = dict[str, tuple[dict[str, Any], int]]  # plugin ID -> (settings, version)

COPY_NAME = "plugins-config.json"
TAKEN_NAME = "taken-files.json"

Taken = dict[str, tuple[str, str]]  # plugin ID -> (sha256, name under the plugins dir)


def save_copy(state_dir: Path, rows: Rows) -> None:
    """Write the rows atomically, so a replica restarted while the database is down can
    serve the config it last had."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {pid: {"settings": s, "version": v} for pid, (s, v) in rows.items()}
    write_atomically(state_dir / COPY_NAME, orjson.dumps(data, option=orjson.OPT_SORT_KEYS))


def load_copy(state_dir: Path) -> Rows | None:
    """The rows last saved, or None if there is no (readable) copy."""
    try:
        data = orjson.loads((state_dir / COPY_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    return {pid: (dict(e["settings"]), int(e["version"])) for pid, e in data.items()}


def save_taken(state_dir: Path, taken: Taken) -> None:
    """Write which files this replica took (or published), so that after a restart it still
    knows which of its files to delete when another replica deletes the plugin."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {pid: {"sha256": d, "name": n} for pid, (d, n) in taken.items()}
    write_atomically(state_dir / TAKEN_NAME, orjson.dumps(data, option=orjson.OPT_SORT_KEYS))


def load_taken(state_dir: Path) -> Taken:
    """The files last saved as taken; none if there is no (readable) record."""
    try:
        data = orjson.loads((state_dir / TAKEN_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    taken: Taken = {}
    for pid, entry in data.items():
        if isinstance(entry, dict):
            digest, name = entry.get("sha256"), entry.get("name")
            if isinstance(digest, str) and isinstance(name, str):
                taken[str(pid)] = (digest, name)
    return taken
