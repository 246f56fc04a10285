"""How an installed plugin runs: the one place that decides the `isolation` a store install
or an upload writes into the plugin's config entry."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Isolation = Literal["inprocess", "process"]


def installed_isolation(requested: Isolation | None, library: Path) -> Isolation:
    """The isolation written for a plugin installed from the store or by upload.

    What the operator's request says wins (`isolation` in the query or the body). Otherwise
    a file fetched from elsewhere runs in a worker process, where a crash or a stray write
    cannot take the host down. (Signed files: a file signed by a trusted key will be allowed
    in-process here, once signatures are checked; `library` is the file that would be
    checked.)
    """
    del library  # read once signatures are checked
    if requested is not None:
        return requested
    return "process"
