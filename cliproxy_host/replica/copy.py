"""The replica's local copy of the last good config it read from the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..config.files import write_atomically

Rows = dict[str, tuple[dict[str, Any], int]]  # plugin ID -> (settings, version)

COPY_NAME = "plugins-config.json"


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
