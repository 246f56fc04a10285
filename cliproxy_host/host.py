"""PluginHost: apply a config (discover, load, register, reconfigure, unload) and dispatch work."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import BaseModel

from .abi import (
    METHOD_CAPABILITY,
    SCHEMA_VERSION,
    HostHandler,
    Method,
    Mode,
    PluginBackend,
    method_mode,
)
from .callbacks import HostCallbacks
from .config import HostConfig
from .discovery import PluginFile, discover
from .envelope import (
    DECLINE_CODES,
    NATIVE_FAILED,
    NO_HANDLER,
    NOT_FOUND,
    NOT_LOADED,
    REGISTRATION_TIMEOUT,
    PluginError,
    PluginLoadError,
    b64encode,
    decode,
)
from .native import NativePlugin
from .registry import (
    NativeHandler,
    Record,
    Registration,
    Snapshot,
    dispatch_order,
    parse_registration,
)

log = logging.getLogger(__name__)

BackendFactory = Callable[[str, Path, HostHandler], PluginBackend]


class _NotHandled:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_HANDLED"


# A native handler returns this to let the next handler (or plugin) take the request.
NOT_HANDLED: Final = _NotHandled()


class PluginInfo(BaseModel):
    """One discovered or configured plugin, as listings show it."""

    id: str
    path: str | None
    version: str | None
    configured: bool
    enabled: bool
    registered: bool
    priority: int
    metadata: dict[str, Any] | None
    capabilities: dict[str, Any]
    error: str | None


@dataclass
class _Slot:
    """The host's mutable knowledge of one plugin; only touched under the host's lock."""

    file: PluginFile
    backend: PluginBackend
    registration: Registration
    config_yaml: bytes


@dataclass(frozen=True)
class BroadcastResult:
    """What one observer made of a broadcast event: its result or its error."""

    name: str
    result: Any = None
    error: PluginError | None = None


def lifecycle_request(config_yaml: bytes) -> bytes:
    return orjson.dumps({"config_yaml": b64encode(config_yaml), "schema_version": SCHEMA_VERSION})


class PluginHost:
    """Loads plugins from a config and routes calls to them. Thread-safe."""

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
            callbacks = self._owned_callbacks = HostCallbacks(config.http)
        self._callbacks = callbacks
        self._factory = backend_factory
        self._lock = threading.RLock()
        self._slots: dict[str, _Slot] = {}
        self._files: dict[str, PluginFile] = {}
        self._errors: dict[str, str] = {}
        self._natives: dict[str, list[NativeHandler]] = {}
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

    # -- applying a config -------------------------------------------------------------

    def apply(self, config: HostConfig | None = None) -> None:
        """Bring the loaded plugins in line with `config` (or the current one).

        Loads what became enabled, reconfigures what changed, swaps a plugin whose
        selected file changed (new registered before old retired), unloads the rest.
        """
        with self._lock:
            if config is not None:
                self._config = config
            cfg = self._config
            pins = {
                pid: pin
                for pid in cfg.plugins.configs
                if (pin := cfg.plugin_entry(pid).pinned_version) is not None
            }
            found = discover(cfg.plugins_dir(), pins)
            self._files = dict(found.files)
            self._errors = dict(found.problems)

            wanted = {
                pid: f
                for pid, f in found.files.items()
                if cfg.plugins.enabled and cfg.plugin_entry(pid).enabled
            }
            retired = [pid for pid in self._slots if pid not in wanted]
            to_load: dict[str, PluginFile] = {}
            for pid, pfile in wanted.items():
                slot = self._slots.get(pid)
                if slot is None or slot.file.path != pfile.path:
                    to_load[pid] = pfile
                elif slot.config_yaml != cfg.config_yaml(pid):
                    self._reconfigure(pid, slot)

            old_slots = {pid: self._slots.pop(pid) for pid in retired}
            replaced = self._load_all(to_load)
            self._publish()
            for pid, slot in [*old_slots.items(), *replaced]:
                self._retire(pid, slot)

    def _load_all(self, files: Mapping[str, PluginFile]) -> list[tuple[str, _Slot]]:
        """Load plugins in parallel, each bounded by the registration timeout.

        Returns the slots that the new ones replaced, for the caller to retire.
        """
        timeout = self._config.plugins.registration_timeout_seconds
        started = time.monotonic()
        pending = {pid: self._start_load(pid, f) for pid, f in files.items()}
        replaced: list[tuple[str, _Slot]] = []
        for pid, (future, cancelled) in pending.items():
            remaining = max(0.0, timeout - (time.monotonic() - started))
            try:
                slot = future.result(timeout=remaining)
            except TimeoutError:
                cancelled.set()
                self._errors[pid] = str(
                    PluginLoadError(
                        REGISTRATION_TIMEOUT,
                        f"{files[pid].path} did not finish loading and registering within "
                        f"{timeout:g}s; fix the plugin or raise "
                        "plugins.registration-timeout-seconds",
                        plugin_id=pid,
                        method=Method.REGISTER,
                    )
                )
                log.error("%s", self._errors[pid])
                continue
            except PluginError as exc:
                self._errors[pid] = str(exc)
                log.error("%s", exc)
                continue
            old = self._slots.get(pid)
            if old is not None:
                replaced.append((pid, old))
            self._slots[pid] = slot
            self._errors.pop(pid, None)
            log.info(
                "plugin %s %s loaded from %s",
                pid,
                slot.registration.metadata.version,
                slot.file.path,
            )
        return replaced

    def _start_load(
        self, plugin_id: str, pfile: PluginFile
    ) -> tuple[Future[_Slot], threading.Event]:
        # A daemon thread, not an executor: a plugin stuck in init or register must not
        # keep the interpreter from exiting.
        future: Future[_Slot] = Future()
        cancelled = threading.Event()
        config_yaml = self._config.config_yaml(plugin_id)

        def run() -> None:
            try:
                slot = self._load(plugin_id, pfile, config_yaml)
            except BaseException as exc:
                future.set_exception(exc)
                return
            if cancelled.is_set():
                # The host gave up waiting; a late finish must not leak a loaded library.
                self._close_backend(plugin_id, slot.backend)
                return
            future.set_result(slot)

        threading.Thread(target=run, name=f"load-{plugin_id}", daemon=True).start()
        return future, cancelled

    def _load(self, plugin_id: str, pfile: PluginFile, config_yaml: bytes) -> _Slot:
        backend = self._factory(plugin_id, pfile.path, self._callbacks)
        try:
            raw = backend.call(Method.REGISTER, lifecycle_request(config_yaml))
            result = decode(raw, plugin_id=plugin_id, method=Method.REGISTER)
            registration = parse_registration(result, plugin_id)
        except BaseException:
            self._close_backend(plugin_id, backend)
            raise
        return _Slot(pfile, backend, registration, config_yaml)

    def _reconfigure(self, plugin_id: str, slot: _Slot) -> None:
        config_yaml = self._config.config_yaml(plugin_id)
        try:
            raw = slot.backend.call(Method.RECONFIGURE, lifecycle_request(config_yaml))
            result = decode(raw, plugin_id=plugin_id, method=Method.RECONFIGURE)
            slot.registration = parse_registration(result, plugin_id)
        except PluginError as exc:
            # The plugin keeps serving with its previous registration.
            self._errors[plugin_id] = f"reconfigure failed, previous config kept: {exc}"
            log.error("%s", self._errors[plugin_id])
            return
        slot.config_yaml = config_yaml
        self._errors.pop(plugin_id, None)
        log.info("plugin %s reconfigured", plugin_id)

    def _publish(self) -> None:
        cfg = self._config
        self._snapshot = Snapshot(
            Record(pid, cfg.plugin_entry(pid).priority, slot.backend, slot.registration)
            for pid, slot in self._slots.items()
        )

    def _retire(self, plugin_id: str, slot: _Slot) -> None:
        self._close_backend(plugin_id, slot.backend)
        log.info("plugin %s unloaded (%s)", plugin_id, slot.file.path)

    def _close_backend(self, plugin_id: str, backend: PluginBackend) -> None:
        try:
            backend.close()
        except Exception:
            log.exception("plugin %s: shutdown failed", plugin_id)
        if self._owned_callbacks is not None:
            self._owned_callbacks.plugin_unloaded(plugin_id)

    def close(self) -> None:
        """Unload every plugin and release the host's HTTP client."""
        with self._lock:
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
        with self._lock:
            cfg = self._config
            ids = set(self._files) | set(cfg.plugins.configs) | set(self._errors)
            infos = []
            for pid in ids:
                entry = cfg.plugin_entry(pid)
                slot = self._slots.get(pid)
                pfile = slot.file if slot else self._files.get(pid)
                reg = slot.registration if slot else None
                infos.append(
                    PluginInfo(
                        id=pid,
                        path=str(pfile.path) if pfile else None,
                        version=(pfile.version if pfile else None),
                        configured=pid in cfg.plugins.configs,
                        enabled=entry.enabled,
                        registered=slot is not None,
                        priority=entry.priority,
                        metadata=reg.metadata.to_json() if reg else None,
                        capabilities=dict(reg.capabilities) if reg else {},
                        error=self._errors.get(pid),
                    )
                )
        infos.sort(key=lambda i: (-i.priority, i.id))
        return infos

    # -- calling ---------------------------------------------------------------------

    def call(self, plugin_id: str, method: str, request: Any = None) -> Any:
        """Call one plugin directly; answer its result or raise its PluginError."""
        record = self._snapshot.get(plugin_id)
        if record is None:
            raise self._unavailable(plugin_id, method)
        return self._invoke(record, method, _encode(request))

    @staticmethod
    def _invoke(record: Record, method: str, data: bytes) -> Any:
        return decode(record.backend.call(method, data), plugin_id=record.plugin_id, method=method)

    def _unavailable(self, plugin_id: str, method: str) -> PluginError:
        with self._lock:
            known = plugin_id in self._files or plugin_id in self._config.plugins.configs
            reason = self._errors.get(plugin_id)
            enabled = self._config.plugin_entry(plugin_id).enabled
            plugins_on = self._config.plugins.enabled
        if not known:
            return PluginError(
                NOT_FOUND,
                f"no plugin file with ID {plugin_id!r} under {self._config.plugins_dir()}",
                plugin_id=plugin_id,
                method=method,
            )
        if reason:
            message = f"not loaded: {reason}"
        elif not plugins_on:
            message = "not loaded: plugins are off; set plugins.enabled: true"
        elif not enabled:
            message = f"not loaded: set plugins.configs.{plugin_id}.enabled: true"
        else:
            message = "not loaded"
        return PluginError(NOT_LOADED, message, plugin_id=plugin_id, method=method)

    def register_native(self, method: str, name: str, handler: Callable[[Any], Any]) -> None:
        """Add a Python handler for `method`; it runs before any plugin.

        `handler(request)` answers the result, or NOT_HANDLED to let the next one try.
        In a chained stage it answers the fields to replace in the request.
        """
        with self._lock:
            self._natives.setdefault(method, []).append(NativeHandler(name, method, handler))

    def dispatch(self, method: str, request: Mapping[str, Any]) -> Any:
        """Route a capability method over native handlers and plugins (ABI.md section 5).

        FIRST: the first handler that handles it answers (declines are skipped).
        CHAIN: each handler's fields replace the request's for the next; returns the request.
        BROADCAST: every handler sees it; returns a BroadcastResult per handler.
        """
        handlers = dispatch_order(self._natives.get(method, ()), self._snapshot.providers(method))
        mode = method_mode(method)
        if mode is Mode.CHAIN:
            return self._chain(method, handlers, dict(request))
        if mode is Mode.BROADCAST:
            return self._broadcast(method, handlers, request)
        return self._first(method, handlers, request)

    def _first(self, method: str, handlers: list[Any], request: Mapping[str, Any]) -> Any:
        data = _encode(request)
        for h in handlers:
            if isinstance(h, NativeHandler):
                result = h.handler(request)
                if result is not NOT_HANDLED:
                    return result
                continue
            try:
                return self._invoke(h, method, data)
            except PluginError as exc:
                if exc.code not in DECLINE_CODES:
                    raise
        flag = METHOD_CAPABILITY.get(method)
        hint = f"; enable a plugin with the {flag} capability" if flag else ""
        raise PluginError(NO_HANDLER, f"nothing handles {method}{hint}", method=method)

    def _chain(self, method: str, handlers: list[Any], request: dict[str, Any]) -> dict[str, Any]:
        for h in handlers:
            if isinstance(h, NativeHandler):
                out = h.handler(request)
            else:
                try:
                    out = self._invoke(h, method, _encode(request))
                except PluginError as exc:
                    # As in the Go host, a stage that fails is skipped, not fatal.
                    if exc.code not in DECLINE_CODES:
                        log.warning("%s (stage skipped)", exc)
                    continue
            if isinstance(out, Mapping):
                request.update(out)
        return request

    def _broadcast(
        self, method: str, handlers: list[Any], request: Mapping[str, Any]
    ) -> list[BroadcastResult]:
        data = _encode(request)
        results = []
        for h in handlers:
            if isinstance(h, NativeHandler):
                try:
                    results.append(BroadcastResult(h.name, h.handler(request)))
                except Exception as exc:
                    log.exception("native observer %s failed on %s", h.name, method)
                    err = PluginError(NATIVE_FAILED, f"{h.name}: {exc}", method=method)
                    results.append(BroadcastResult(h.name, error=err))
                continue
            try:
                results.append(BroadcastResult(h.plugin_id, self._invoke(h, method, data)))
            except PluginError as exc:
                log.warning("%s (observer failed)", exc)
                results.append(BroadcastResult(h.plugin_id, error=exc))
        return results


def _encode(request: Any) -> bytes:
    if isinstance(request, bytes):
        return request
    return orjson.dumps({} if request is None else request)
