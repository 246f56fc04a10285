"""HostService: a PluginHost bound to its config file, kept in step with edits and file drops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.protocol import State
from ..config import ConfigError, ConfigStore, HostConfig
from ..discovery import discover, is_valid_id
from ..errors import InvalidPluginId, PluginBusy, PluginNotFound
from .facade import PluginHost
from .watch import Changes, Watcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deleted:
    plugin_id: str
    files: list[Path]
    config_removed: bool


class HostService:
    """Owns the config file (through ConfigStore), the PluginHost and the watcher.

    Every change made through it is written to the file first, then applied to the host.
    Hand edits of the file and new plugin files are picked up by the watcher.
    """

    def __init__(
        self,
        config_path: Path,
        *,
        protect_secret: Callable[[str], str] | None = None,
        watch: bool = True,
        host_factory: Callable[[HostConfig], PluginHost] = PluginHost,
    ) -> None:
        self.config_path = config_path
        self.store = ConfigStore(config_path, protect_secret=protect_secret)
        self._protects_secret = protect_secret is not None
        self.host = host_factory(self.store.config)
        self._watch = watch
        self._watcher: Watcher | None = None
        self._loader: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def config(self) -> HostConfig:
        return self.store.config

    def start(self) -> None:
        """Start loading plugins in the background and watching for changes; returns at once.

        A plaintext management key in the file is replaced by its hash first.
        """
        if self._protects_secret:
            self.store.protect_secret_now()
        self._loader = threading.Thread(target=self._initial_load, name="plugin-load", daemon=True)
        self._loader.start()
        if self._watch:
            self._watcher = Watcher(self.config_path, self.config.plugins_dir(), self._on_change)
            self._watcher.start()

    def _initial_load(self) -> None:
        try:
            self.host.apply(self.store.config)
        finally:
            self._ready.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the plugins present at start have loaded (or failed to)."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Stop watching, then unload every plugin (calls in flight finish first)."""
        if self._watcher is not None:
            self._watcher.stop()
        self.host.close()

    def _on_change(self, changes: Changes) -> None:
        if changes.config_changed:
            try:
                self.store.reload()
            except ConfigError as exc:
                log.error("config edit not applied, the previous config stays in force: %s", exc)
                return
            log.info("config file changed; applying it")
        if changes.plugin_files:
            log.info("plugin files changed: %s", ", ".join(sorted(map(str, changes.plugin_files))))
        self.host.apply(self.store.config)

    # -- changes made through the API ---------------------------------------------------

    def _checked(self, plugin_id: str) -> None:
        if not is_valid_id(plugin_id):
            raise InvalidPluginId(
                f"{plugin_id!r} is not a plugin ID: use letters, digits, '.', '_' and '-', "
                "starting with a letter or digit, at most 128 characters"
            )
        if self.host.loading(plugin_id):
            raise PluginBusy(
                f"plugin {plugin_id} is loading; retry when it has finished",
                plugin_id=plugin_id,
                http_status=409,
            )

    def exists(self, plugin_id: str) -> bool:
        cfg = self.store.config
        return plugin_id in cfg.plugins.configs or any(
            i.id == plugin_id for i in self.host.plugins()
        )

    def replace_config(self, plugin_id: str, settings: Mapping[str, Any]) -> HostConfig:
        self._checked(plugin_id)
        cfg = self.store.replace_plugin_config(plugin_id, settings)
        self.host.apply(cfg)
        return cfg

    def patch_config(self, plugin_id: str, patch: Mapping[str, Any]) -> HostConfig:
        self._checked(plugin_id)
        cfg = self.store.patch_plugin_config(plugin_id, patch)
        self.host.apply(cfg)
        return cfg

    def set_enabled(self, plugin_id: str, enabled: bool) -> HostConfig:
        """Write `enabled` and apply it; enabling a fused plugin also clears its fuse."""
        self._checked(plugin_id)
        cfg = self.store.set_enabled(plugin_id, enabled)
        self.host.apply(cfg)
        health = self.host.health(plugin_id)
        if enabled and health is not None and health.state is State.FUSED:
            self.host.restart(plugin_id)
        return cfg

    def delete(self, plugin_id: str) -> Deleted:
        """Unload the plugin, delete its files (every version), drop its config entry."""
        self._checked(plugin_id)
        cfg = self.store.config
        root = cfg.plugins_dir()
        found = discover(root)
        files = [f.path for f in found.candidates.get(plugin_id, ())]
        configured = plugin_id in cfg.plugins.configs
        if not files and not configured:
            raise PluginNotFound(f"no plugin file or config entry with ID {plugin_id}")
        self.host.unload(plugin_id)
        deleted = []
        real_root = root.resolve()
        for path in files:
            # Only files whose directory really lies inside the plugins dir: a symlinked
            # directory must not turn a delete into one outside it. A symlinked file is
            # removed as a link; its target is left alone.
            if not path.parent.resolve().is_relative_to(real_root):
                log.warning("not deleting %s: it resolves outside %s", path, real_root)
                continue
            path.unlink(missing_ok=True)
            deleted.append(path)
            log.info("deleted plugin file %s", path)
        new_cfg = self.store.delete_plugin(plugin_id) if configured else cfg
        self.host.apply(new_cfg)
        return Deleted(plugin_id, deleted, configured)
