"""Counts PluginHost.apply calls and the batches the hot-reload watcher hands to HostService."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cliproxy_host.config.schema import HostConfig
from cliproxy_host.host.facade import PluginHost
from cliproxy_host.host.service import HostService
from cliproxy_host.host.watch import Changes


class ApplyCounter:
    """Patches the classes (so it sees services made anywhere, even inside run_server)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._lock = threading.Lock()
        self._applies = 0
        self._batches: list[Changes] = []
        apply, on_change = PluginHost.apply, HostService._on_change

        def counted_apply(host: PluginHost, config: HostConfig | None = None) -> None:
            with self._lock:
                self._applies += 1
            apply(host, config)

        def recorded_on_change(service: HostService, changes: Changes) -> None:
            on_change(service, changes)
            # After the callback returned: whatever it applied is counted by now.
            with self._lock:
                self._batches.append(changes)

        monkeypatch.setattr(PluginHost, "apply", counted_apply)
        monkeypatch.setattr(HostService, "_on_change", recorded_on_change)

    @property
    def applies(self) -> int:
        with self._lock:
            return self._applies

    def reset(self) -> None:
        with self._lock:
            self._applies = 0
            self._batches.clear()

    def saw_config_write(self) -> bool:
        """Whether the watcher has handed over a batch with the config file in it."""
        with self._lock:
            return any(b.config_changed for b in self._batches)

    def saw_file(self, path: Path) -> bool:
        """Whether the watcher has handed over a batch with this plugin file in it."""
        with self._lock:
            return any(path in b.plugin_files for b in self._batches)
