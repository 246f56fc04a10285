"""Where cliproxy-host keeps what it builds for this user (the line core, the ABI's cffi module)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/cliproxy-host, or ~/.cache/cliproxy-host (a directory of this
    user's under the temp dir where there is no home)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no passwd entry
            # Imported here: tempfile costs every worker start ~4 ms (abi.py uses this).
            import tempfile  # noqa: PLC0415

            return Path(tempfile.gettempdir()) / f"cliproxy-host-{os.getuid()}"
    return Path(base) / "cliproxy-host"
