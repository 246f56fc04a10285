"""How a supervisor starts its workers: from scratch, or by waking a standby spawned ahead.

A standby worker is kept for the next restart of a plugin library: spawned once the
running worker has loaded the plugin, it has imported everything and waits (spawn.py), so
a restart after a crash costs the plugin's load, not an interpreter's start. It costs one
idle process per isolated plugin (IsolationLimits.standby_worker turns it off). Plugin
programs (backends/program) have no standby form: they start from scratch.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from .limits import IsolationLimits
from .process import Owner, WorkerProcess
from .spawn import Spawned, discard, spawn

log = logging.getLogger(__name__)

W = TypeVar("W")
W_co = TypeVar("W_co", covariant=True)


class Starter(Protocol[W_co]):
    """Starts a supervisor's workers; called from the supervisor's own thread only."""

    def start(self, ids: itertools.count[int]) -> W_co:
        """A new worker (it may raise OSError)."""
        ...

    def ahead(self) -> None:
        """The worker loaded its plugin: prepare what makes the next start quick."""
        ...

    def discard(self) -> None:
        """The plugin is closing: drop what was prepared."""
        ...


class FreshStarts(Generic[W]):
    """Every worker started from scratch by a function."""

    def __init__(self, start: Callable[[itertools.count[int]], W]) -> None:
        self._start = start

    def start(self, ids: itertools.count[int]) -> W:
        return self._start(ids)

    def ahead(self) -> None:
        pass

    def discard(self) -> None:
        pass


class LibraryStarts:
    """Workers hosting a plugin library: a standby woken where one waits, else spawned."""

    def __init__(
        self,
        plugin_id: str,
        path: Path,
        limits: IsolationLimits,
        owner: Owner,
        closing: Callable[[], bool],
    ) -> None:
        """`closing` says whether the plugin is being closed (no standby is spawned then)."""
        self._plugin_id = plugin_id
        self._path = path
        self._limits = limits
        self._owner = owner
        self._closing = closing
        self._standby: Spawned | None = None
        self._failed = False

    def start(self, ids: itertools.count[int]) -> WorkerProcess:
        standby, self._standby = self._standby, None
        if standby is not None:
            if standby[0].poll() is None:
                try:
                    worker = self._worker(ids, standby)
                except OSError:  # it died while it waited
                    pass
                else:
                    # The next one while this one loads the plugin (on another core).
                    self.ahead()
                    return worker
            discard(standby)
        return self._worker(ids, None)

    def _worker(self, ids: itertools.count[int], standby: Spawned | None) -> WorkerProcess:
        return WorkerProcess(
            self._plugin_id, self._path, self._limits, ids, self._owner, standby=standby
        )

    def ahead(self) -> None:
        if not self._limits.standby_worker or self._standby is not None or self._failed:
            return
        if self._closing():
            return
        try:
            self._standby = spawn(self._plugin_id, self._path, self._limits, standby=True)
        except OSError as exc:
            # Once: restarts then start their worker from scratch, as they did before.
            self._failed = True
            log.warning(
                "plugin %s: cannot spawn a standby worker (%s); restarts start a new one",
                self._plugin_id,
                exc,
            )

    def discard(self) -> None:
        if self._standby is not None:
            discard(self._standby)
            self._standby = None
