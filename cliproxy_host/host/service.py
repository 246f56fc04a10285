"""HostService: a PluginHost bound to its config file, kept in step with edits and file drops."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..backends.protocol import State
from ..config import FILE_ONLY_KEYS, ConfigError, ConfigStore, HostConfig
from ..config.files import Stamp, stamp_of
from ..discovery import discover, is_valid_id
from ..errors import (
    ConfigSaveFailed,
    InvalidConfig,
    InvalidPluginId,
    PluginBusy,
    PluginNotFound,
)
from ..observe.audit import AuditLog
from ..trust.signatures import signature_path
from ..wheels import site_dirs
from .facade import PluginHost
from .reconcile import plugins_dir_error
from .watch import Changes, Watcher

if TYPE_CHECKING:
    from ..replica import ConfigStoreStatus, PgConfigStore

log = logging.getLogger(__name__)


class PluginsConfigStore(Protocol):
    """What HostService needs of a config store: ConfigStore (the YAML file) or
    PgConfigStore (PostgreSQL, shared by replicas)."""

    @property
    def config(self) -> HostConfig: ...
    def replace_plugin_config(self, plugin_id: str, settings: Mapping[str, Any]) -> HostConfig: ...
    def patch_plugin_config(self, plugin_id: str, patch: Mapping[str, Any]) -> HostConfig: ...
    def set_enabled(self, plugin_id: str, enabled: bool) -> HostConfig: ...
    def delete_plugin(self, plugin_id: str) -> HostConfig: ...
    def protect_secret_now(self) -> HostConfig: ...
    def reload(self) -> HostConfig: ...
    def reload_if_changed(self) -> HostConfig | None: ...


@dataclass(frozen=True)
class Deleted:
    plugin_id: str
    files: list[Path]
    config_removed: bool


class HostService:
    """Owns the config file (through ConfigStore), the PluginHost and the watcher.

    Every change made through it is written to the file first, then applied to the host,
    once: the watcher's echo of the service's own writes (the config file it wrote, the
    plugin files it deleted) is recognised and not applied again. Hand edits of the file
    and new plugin files are picked up by the watcher. Failures are raised as the error
    tree's classes (InvalidPluginId, PluginBusy, PluginNotFound, InvalidConfig,
    ConfigSaveFailed). `audit` is the AuditLog the management API records its writes in
    (None with `audit.enabled: false`).
    """

    def __init__(
        self,
        config_path: Path,
        *,
        protect_secret: Callable[[str], str] | None = None,
        watch: bool = True,
        host_factory: Callable[[HostConfig], PluginHost] = PluginHost,
        config_store: str | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """config_store: a postgresql:// DSN to share the plugins config with other
        replicas (the file is then read once, never written); None: the file alone.
        state_dir: where such a replica keeps its local copy (beside the file if None)."""
        self.config_path = config_path
        self._replica: PgConfigStore | None = None
        self.store: PluginsConfigStore
        if config_store is None:
            self.store = ConfigStore(config_path, protect_secret=protect_secret)
        else:
            # Imported here: psycopg is the optional `postgres` extra.
            from ..replica import PgConfigStore  # noqa: PLC0415

            self._replica = PgConfigStore(
                config_path, config_store, state_dir=state_dir, protect_secret=protect_secret
            )
            self.store = self._replica
        dir_error = plugins_dir_error(self.store.config)
        if dir_error is not None:
            # Refused at start, where the operator sees it; later it keeps the config in force.
            raise ConfigError(dir_error)
        self._protects_secret = protect_secret is not None
        self.host = host_factory(self.store.config)
        # Read once, like the management key: where the audit goes changes with a restart.
        audit = self.store.config.audit
        self.audit = (
            AuditLog(
                self.store.config.audit_path(), max_bytes=audit.max_bytes, max_files=audit.max_files
            )
            if audit.enabled
            else None
        )
        self._watch = watch
        self._watcher: Watcher | None = None
        self._loader: threading.Thread | None = None
        self._ready = threading.Event()
        # One change at a time, each applied with the config it wrote: a watcher reload
        # never applies a config older than one a request has already applied.
        self._changing = threading.RLock()
        # Plugin files this service deleted, until the watcher reports them gone.
        self._removed: set[str] = set()

    @property
    def config(self) -> HostConfig:
        return self.store.config

    @property
    def config_store_status(self) -> ConfigStoreStatus | None:
        """The shared config store's link (None with the YAML file alone)."""
        return self._replica.status if self._replica is not None else None

    def start(self) -> None:
        """Start loading plugins in the background and watching for changes; returns at once.

        A plaintext management key in the file is replaced by its hash first.
        """
        if self._protects_secret:
            self.store.protect_secret_now()
        self._loader = threading.Thread(target=self._initial_load, name="plugin-load", daemon=True)
        self._loader.start()
        if self._replica is not None:
            self._replica.start(self._on_replica_change)
        if self._watch:
            self._watcher = Watcher(
                self.config_path,
                self.config.plugins_dir(),
                self._on_change,
                wheel_dirs=site_dirs(),
            )
            self._watcher.start()

    def _initial_load(self) -> None:
        try:
            with self._changing:
                self.host.apply(self.store.config)
        except ConfigError:
            pass  # the plugins dir went away since start; the host has logged why
        finally:
            self._ready.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the plugins present at start have loaded (or failed to)."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Stop watching, then unload every plugin (calls in flight finish first)."""
        if self._watcher is not None:
            self._watcher.stop()
        if self._replica is not None:
            self._replica.stop()
        self.host.close()

    def _on_replica_change(self) -> None:
        """Another replica wrote the shared config: apply what the store holds now."""
        with self._changing:
            log.info("config store changed by another replica; applying it")
            with suppress(ConfigError):  # the plugins dir is unusable: the host logged it
                self.host.apply(self.store.config)

    # -- changes seen by the watcher ----------------------------------------------------

    def _on_change(self, changes: Changes) -> None:
        with self._changing:
            try:
                edited = changes.config_changed and self.store.reload_if_changed() is not None
            except ConfigError as exc:
                log.error("config edit not applied, the previous config stays in force: %s", exc)
                return
            files = self._not_own(changes.plugin_files)
            if not (edited or files or changes.wheels_changed):
                # Only what this service wrote or deleted itself, and has applied already.
                log.debug("the watcher saw only the service's own writes; nothing to apply")
                return
            if edited:
                log.info("config file changed; applying it")
            if files:
                log.info("plugin files changed: %s", ", ".join(sorted(map(str, files))))
            if changes.wheels_changed:
                log.info("installed Python distributions changed; looking for plugin wheels")
            with suppress(ConfigError):  # the plugins dir is unusable: the host logged it
                self.host.apply(self.store.config)

    def _not_own(self, paths: frozenset[Path]) -> list[Path]:
        """The changed plugin files, less this service's own deletions echoed back."""
        foreign = []
        for path in paths:
            key = os.path.abspath(path)
            own = key in self._removed and not os.path.lexists(key)
            # Reported once: from now on a change at this path is someone else's.
            self._removed.discard(key)
            if not own:
                foreign.append(path)
        return foreign

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

    @contextmanager
    def _change(self, plugin_id: str) -> Iterator[None]:
        """Check the ID, then hold the change lock; store errors become the tree's."""
        self._checked(plugin_id)
        with self._changing:
            try:
                yield
            except ConfigError as exc:
                raise InvalidConfig(str(exc), plugin_id=plugin_id) from None
            except OSError as exc:
                raise ConfigSaveFailed(
                    f"{exc.strerror}: {exc.filename}", plugin_id=plugin_id
                ) from None

    def exists(self, plugin_id: str) -> bool:
        return self.host.plugin(plugin_id) is not None or plugin_id in self.config.plugins.configs

    def replace_config(self, plugin_id: str, settings: Mapping[str, Any]) -> HostConfig:
        """Make `settings` the plugin's whole entry, as the Go host's PUT does (a key left
        out is gone, `enabled` then false), except that a PUT which would disable an
        enabled plugin only because it left `enabled` out is refused (InvalidConfig)."""
        refuse_file_only_keys(plugin_id, settings)
        with self._change(plugin_id):
            # What the host runs stays as the file says: a PUT replaces the rest.
            current = self.config.plugin_entry(plugin_id).as_mapping()
            settings = {**settings, **{k: current[k] for k in FILE_ONLY_KEYS if k in current}}
            # The entry's own errors first, worded as the file's; then the enablement rule.
            HostConfig.from_mapping(
                {"plugins": {"configs": {plugin_id: dict(settings)}}}, str(self.config_path)
            )
            if "enabled" not in settings and self.config.plugin_entry(plugin_id).enabled:
                raise InvalidConfig(
                    f"plugins.configs.{plugin_id}.enabled: left out, and PUT replaces the whole"
                    f' entry, which would disable {plugin_id}: send "enabled": true to keep it'
                    " enabled (or false to disable it), or PATCH only the keys to change",
                    plugin_id=plugin_id,
                )
            cfg = self.store.replace_plugin_config(plugin_id, settings)
            self.host.apply(cfg)
        return cfg

    def patch_config(self, plugin_id: str, patch: Mapping[str, Any]) -> HostConfig:
        refuse_file_only_keys(plugin_id, patch)
        with self._change(plugin_id):
            cfg = self.store.patch_plugin_config(plugin_id, patch)
            self.host.apply(cfg)
        return cfg

    def install_file(
        self,
        plugin_id: str,
        place: Callable[[], Callable[[], None]],
        entry: Mapping[str, Any],
    ) -> HostConfig:
        """Put a plugin file in place (`place` returns how to undo it), merge `entry` into
        its config entry and apply, as one change: if the config cannot be written, the
        file is taken back, so the file and the config never disagree."""
        with self._change(plugin_id):
            before = self._files_of(plugin_id) if self._replica is not None else {}
            undo = place()
            try:
                if self._replica is not None:
                    self._publish(self._replica, plugin_id, before)
                cfg = self.store.patch_plugin_config(plugin_id, entry)
            except BaseException:
                undo()
                raise
            self.host.apply(cfg)
        return cfg

    def _files_of(self, plugin_id: str) -> dict[Path, Stamp | None]:
        root = self.config.plugins_dir()
        found = discover(root).candidates.get(plugin_id, ())
        return {f.path: stamp_of(f.path) for f in found}

    def _publish(
        self, replica: PgConfigStore, plugin_id: str, before: Mapping[Path, Stamp | None]
    ) -> None:
        """Store the file `place` just wrote in the config store, for the other replicas."""
        root = self.config.plugins_dir()
        for path, stamp in self._files_of(plugin_id).items():
            if before.get(path) == stamp:
                continue
            sig = signature_path(path)
            signature = sig.read_bytes() if sig.is_file() else None
            name = path.relative_to(root).as_posix()
            replica.publish_file(plugin_id, name, path.read_bytes(), signature)

    def set_enabled(self, plugin_id: str, enabled: bool) -> HostConfig:
        """Write `enabled` and apply it; enabling a fused plugin also clears its fuse."""
        with self._change(plugin_id):
            cfg = self.store.set_enabled(plugin_id, enabled)
            self.host.apply(cfg)
            health = self.host.health(plugin_id)
            if enabled and health is not None and health.state is State.FUSED:
                self.host.restart(plugin_id)
        return cfg

    def delete(self, plugin_id: str) -> Deleted:
        """Unload the plugin, delete its files (every version), drop its config entry."""
        with self._change(plugin_id):
            cfg = self.store.config
            root = cfg.plugins_dir()
            found = discover(root)
            files = [f.path for f in found.candidates.get(plugin_id, ())]
            configured = plugin_id in cfg.plugins.configs
            if not files and not configured:
                raise PluginNotFound(f"no plugin file or config entry with ID {plugin_id}")
            self.host.unload(plugin_id)
            deleted = self._delete_files(files, root)
            if self._replica is not None:
                self._replica.forget_file(plugin_id)  # the other replicas delete theirs
            new_cfg = self.store.delete_plugin(plugin_id) if configured else cfg
            self.host.apply(new_cfg)
        return Deleted(plugin_id, deleted, configured)

    def _delete_files(self, files: list[Path], root: Path) -> list[Path]:
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
            if self._watcher is not None:
                self._removed.add(os.path.abspath(path))
            deleted.append(path)
            log.info("deleted plugin file %s", path)
        return deleted


def refuse_file_only_keys(plugin_id: str, settings: Mapping[str, Any]) -> None:
    """InvalidConfig when an API write sets a key only the config file may set
    (`command`, `cwd`, `env`: what the host runs must not be a management call away)."""
    keys = sorted(FILE_ONLY_KEYS.intersection(settings))
    if keys:
        raise InvalidConfig(
            f"plugins.configs.{plugin_id}.{keys[0]}: set only in the config file, never "
            f"through the management API ({', '.join(keys)}); edit the file instead",
            plugin_id=plugin_id,
        )
