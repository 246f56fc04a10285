"""PluginHost: the façade that applies a config to the loaded plugins and routes work to them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from ..abi import HostHandler, Method
from ..backends.guard import GuardedBackend
from ..backends.native import NativePlugin
from ..backends.protocol import Health
from ..callbacks import HostCallbacks
from ..config import HostConfig
from ..discovery import PluginFile
from ..errors import PluginError, PluginUnloading
from . import dispatch, reconcile
from .dispatch import NOT_HANDLED, BroadcastResult, NativeHandlers, encode
from .listing import PluginInfo, describe, unavailable
from .loader import (
    BackendFactory,
    Slot,
    Spec,
    lifecycle_request,
    load_parallel,
    load_plugin,
    warn_go_runtimes,
)
from .registry import (
    NativeHandler,
    Record,
    Registration,
    Snapshot,
    parse_registration,
)

__all__ = ["NOT_HANDLED", "BroadcastResult", "PluginHost", "PluginInfo", "lifecycle_request"]

log = logging.getLogger(__name__)


class PluginHost:
    """Loads plugins from a config and routes calls to them. Thread-safe.

    The work is done elsewhere (reconcile plans, loader loads, dispatch routes, listing
    describes); this class holds the state they share and the two locks that guard it,
    which is why it is longer than the other classes: splitting the state would spread
    one locking discipline over several classes.
    """

    def __init__(
        self,
        config: HostConfig,
        *,
        callbacks: HostHandler | None = None,
        backend_factory: BackendFactory = NativePlugin,
    ) -> None:
        self._config = config
        self._owned_callbacks: HostCallbacks | None = None
        if callbacks is None:
            callbacks = self._owned_callbacks = HostCallbacks(
                config.http,
                auth_dir=config.auth_dir_path(),
                max_auth_bytes=config.remote_management.max_body_bytes,
            )
        self._callbacks = callbacks
        self._factory = backend_factory
        # Applies are serialised by _apply_lock, which may be held while plugins load;
        # _state guards the fields below and is only ever held briefly, so listing and
        # calling never wait for a slow plugin.
        self._apply_lock = threading.Lock()
        self._state = threading.RLock()
        self._slots: dict[str, Slot] = {}
        self._files: dict[str, PluginFile] = {}
        self._errors: dict[str, str] = {}
        self._loading: set[str] = set()
        self._natives = NativeHandlers()
        self._listeners: list[Callable[[], None]] = []
        # Readers take this reference once per call and never see a half-applied config.
        self._snapshot = Snapshot()
        self._closed = False

    @classmethod
    def from_config(cls, path: str | Path, **kwargs: Any) -> PluginHost:
        """Read the YAML config at `path`, then discover, load and register its plugins."""
        host = cls(HostConfig.load(Path(path)), **kwargs)
        host.apply()
        return host

    @property
    def config(self) -> HostConfig:
        return self._config

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every change of the loaded plugins (from the changing thread)."""
        with self._state:
            self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("plugin change listener failed")

    # -- applying a config -------------------------------------------------------------

    def apply(self, config: HostConfig | None = None) -> None:
        """Bring the loaded plugins in line with `config` (or the current one).

        Loads what became enabled, reconfigures what changed and unloads the rest
        (reconcile.plan says which). A plugin whose selected file changed is swapped: the
        new library is loaded and registered, dispatch switches to it, then the old one is
        retired once its calls in flight have finished. With `reload: restart` in the
        plugin's config (and for a file replaced in place) the old one is shut down first.
        A reload that fails keeps the old version serving.
        """
        with self._apply_lock:
            with self._state:
                if self._closed:
                    return
                if config is not None:
                    self._config = config
                cfg = self._config
                slots = dict(self._slots)
            steps = reconcile.plan(cfg, slots)
            with self._state:
                self._files = steps.files
                self._errors = steps.problems
            for pid in steps.reconfigure:
                self._reconfigure(pid, slots[pid])
            # Shut down first what must not run beside its successor.
            with self._state:
                stopped = {pid: self._slots.pop(pid) for pid in [*steps.retire, *steps.restart]}
                self._loading = set(steps.load)
                self._publish()
            for pid, slot in stopped.items():
                self._retire(pid, slot)
            replaced = self._load_all(steps.load)
            for pid, slot in replaced:
                self._retire(pid, slot)
            self._warn_go_runtimes()
        self._notify()

    def _warn_go_runtimes(self) -> None:
        with self._state:
            warn_go_runtimes(self._slots)

    def unload(self, plugin_id: str) -> bool:
        """Stop routing to a plugin and shut it down; answers whether it was loaded.

        It stays unloaded until a later apply() finds it enabled again.
        """
        with self._apply_lock:
            with self._state:
                slot = self._slots.pop(plugin_id, None)
                self._publish()
            if slot is None:
                return False
            self._retire(plugin_id, slot)
        self._notify()
        return True

    def restart(self, plugin_id: str) -> None:
        """Shut a loaded plugin down and load it again (an operator clearing a fuse)."""
        with self._apply_lock:
            with self._state:
                slot = self._slots.pop(plugin_id, None)
                if slot is None:
                    return
                self._loading.add(plugin_id)
                self._publish()
            self._retire(plugin_id, slot)
            for pid, old in self._load_all({plugin_id: slot.file}):
                self._retire(pid, old)
        self._notify()

    def health(self, plugin_id: str) -> Health | None:
        record = self._snapshot.get(plugin_id)
        return record.backend.health() if record else None

    def loading(self, plugin_id: str) -> bool:
        with self._state:
            return plugin_id in self._loading

    def _load_all(self, files: Mapping[str, PluginFile]) -> list[tuple[str, Slot]]:
        """Load plugins in parallel, each bounded by the registration timeout.

        Plugins are published as they become ready, all those ready at the same moment in
        one snapshot (one per plugin would make start-up quadratic). Returns the slots that
        the new ones replaced, for the caller to retire.
        """
        cfg = self._config
        jobs = {
            pid: partial(self._load, pid, pfile, cfg.config_yaml(pid))
            for pid, pfile in files.items()
        }
        replaced: list[tuple[str, Slot]] = []
        batches = load_parallel(
            files, jobs, cfg.plugins.registration_timeout_seconds, self._close_backend
        )
        for loaded, failed in batches:
            for pid, reason in failed.items():
                self._fail(pid, reason)
            with self._state:
                for pid, slot in loaded:
                    old = self._slots.get(pid)
                    if old is not None:
                        replaced.append((pid, old))
                    self._slots[pid] = slot
                    self._errors.pop(pid, None)
                    self._loading.discard(pid)
                if loaded:
                    self._publish()
            for pid, slot in loaded:
                log.info(
                    "plugin %s %s loaded from %s",
                    pid,
                    slot.registration.metadata.version,
                    slot.file.path,
                )
        return replaced

    def _fail(self, plugin_id: str, reason: str) -> None:
        with self._state:
            self._errors[plugin_id] = reason
            self._loading.discard(plugin_id)
        log.error("%s", reason)

    def _load(self, plugin_id: str, pfile: PluginFile, config_yaml: bytes) -> Slot:
        spec = Spec.of(self._config, plugin_id)
        return load_plugin(
            plugin_id,
            pfile,
            config_yaml,
            spec,
            callbacks=self._callbacks,
            factory=self._factory,
            close=self._close_backend,
        )

    def _reconfigure(self, plugin_id: str, slot: Slot) -> None:
        config_yaml = self._config.config_yaml(plugin_id)
        try:
            result = slot.backend.call(Method.RECONFIGURE, lifecycle_request(config_yaml))
            registration = parse_registration(result, plugin_id)
        except PluginError as exc:
            # The plugin keeps serving with its previous registration.
            self._fail(plugin_id, f"reconfigure failed, previous config kept: {exc}")
            return
        with self._state:
            slot.registration = registration
            slot.config_yaml = config_yaml
            self._errors.pop(plugin_id, None)
            self._publish()
        log.info("plugin %s reconfigured", plugin_id)

    def _publish(self) -> None:
        cfg = self._config
        self._snapshot = Snapshot(
            Record(pid, cfg.plugin_entry(pid).priority, slot.backend, slot.registration)
            for pid, slot in self._slots.items()
        )

    def _retire(self, plugin_id: str, slot: Slot) -> None:
        self._close_backend(plugin_id, slot.backend)
        log.info("plugin %s unloaded (%s)", plugin_id, slot.file.path)

    def _close_backend(self, plugin_id: str, backend: GuardedBackend) -> None:
        try:
            backend.close()
        except Exception:
            log.exception("plugin %s: shutdown failed", plugin_id)
        if self._owned_callbacks is not None:
            self._owned_callbacks.plugin_unloaded(plugin_id)

    def close(self) -> None:
        """Unload every plugin and release the host's HTTP client."""
        with self._apply_lock:
            with self._state:
                if self._closed:
                    return
                self._closed = True
                slots, self._slots = self._slots, {}
                self._snapshot = Snapshot()
            for pid, slot in slots.items():
                self._retire(pid, slot)
            if self._owned_callbacks is not None:
                self._owned_callbacks.close()

    def __enter__(self) -> PluginHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- listing ---------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every discovered or configured plugin, in dispatch order (priority, then ID)."""
        with self._state:
            ids = set(self._files) | set(self._config.plugins.configs) | set(self._errors)
            infos = [self._describe(pid) for pid in ids]
        infos.sort(key=lambda i: (-i.priority, i.id))
        return infos

    def plugin(self, plugin_id: str) -> PluginInfo | None:
        """The listing entry of one plugin (None when nothing is known of the ID)."""
        with self._state:
            known = (
                plugin_id in self._files
                or plugin_id in self._config.plugins.configs
                or plugin_id in self._errors
                or plugin_id in self._slots
            )
            return self._describe(plugin_id) if known else None

    def _describe(self, plugin_id: str) -> PluginInfo:
        return describe(
            plugin_id,
            self._config,
            self._slots.get(plugin_id),
            self._files.get(plugin_id),
            loading=plugin_id in self._loading,
            error=self._errors.get(plugin_id),
        )

    def registration(self, plugin_id: str) -> Registration | None:
        """The registration of a loaded plugin (None when it is not loaded)."""
        record = self._snapshot.get(plugin_id)
        return record.registration if record else None

    # -- calling ---------------------------------------------------------------------

    def call(self, plugin_id: str, method: str, request: Any = None) -> Any:
        """Call one plugin directly; answer its result or raise its PluginError."""
        record = self._snapshot.get(plugin_id)
        if record is None:
            raise self._unavailable(plugin_id, method)
        return self._invoke(record, method, encode(request))

    def _invoke(self, record: Record, method: str, data: bytes) -> Any:
        """The result of one call through the plugin's guard, which decodes and counts it."""
        try:
            return record.backend.call(method, data)
        except PluginUnloading:
            # A caller can pick a record just before a swap retires it. The refusal comes
            # before the plugin saw the request, so the successor can safely take it.
            successor = self._snapshot.get(record.plugin_id)
            if successor is None or successor is record:
                raise
            return successor.backend.call(method, data)

    def _unavailable(self, plugin_id: str, method: str) -> PluginError:
        with self._state:
            return unavailable(
                plugin_id,
                method,
                self._config,
                has_file=plugin_id in self._files,
                loading=plugin_id in self._loading,
                reason=self._errors.get(plugin_id),
            )

    def register_native(self, method: str, name: str, handler: Callable[[Any], Any]) -> None:
        """Add a Python handler for `method`; it runs before any plugin.

        `handler(request)` answers the result, or NOT_HANDLED to let the next one try.
        In a chained stage it answers the fields to replace in the request.
        """
        self._natives.add(NativeHandler(name, method, handler))

    def dispatch(self, method: str, request: Mapping[str, Any]) -> Any:
        """Route a capability method over native handlers and plugins by its mode.

        FIRST answers the first handler's result, CHAIN the request as the stages left it,
        BROADCAST a BroadcastResult per observer (see host/dispatch.py).
        """
        handlers = self._natives.order(method, self._snapshot.providers(method))
        return dispatch.run(method, handlers, request, self._invoke)
