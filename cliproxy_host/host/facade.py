"""PluginHost: apply a config (discover, load, register, reconfigure, unload) and dispatch work."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import BaseModel

from ..abi import (
    LIBRARY_SUFFIX,
    METHOD_CAPABILITY,
    SCHEMA_VERSION,
    HostHandler,
    Method,
    Mode,
    method_mode,
)
from ..backends.guard import GuardedBackend, GuardLimits
from ..backends.isolated.client import IsolatedPlugin
from ..backends.isolated.limits import IsolationLimits
from ..backends.native import NativePlugin, built_with_go
from ..backends.protocol import Health, PluginBackend, State
from ..callbacks import HostCallbacks
from ..config.schema import HostConfig
from ..discovery import PluginFile, discover
from ..envelope import b64encode
from ..errors import (
    DECLINE_CODES,
    NativeHandlerFailed,
    NoHandler,
    PluginError,
    PluginNotFound,
    PluginNotLoaded,
    PluginUnloading,
    RegistrationTimeout,
)
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
    loading: bool
    priority: int
    metadata: dict[str, Any] | None
    capabilities: dict[str, Any]
    error: str | None  # why it is not loaded, or what last went wrong in loading it
    isolation: str
    state: str | None  # running | restarting | unhealthy | fused, while loaded
    restarts: int
    last_error: str | None  # the last runtime failure (crash, timeout, open circuit)
    last_signal: str | None  # the signal that killed its worker last, if any


@dataclass
class _Slot:
    """The host's mutable knowledge of one plugin; only touched under the host's lock."""

    file: PluginFile
    backend: GuardedBackend
    registration: Registration
    config_yaml: bytes
    # (inode, size, mtime) of the file when it was loaded: tells an in-place replacement.
    stamp: tuple[int, int, int]
    # How the backend was built (isolation and limits); a change needs a new backend.
    spec: _Spec
    # An in-process library with a Go runtime in it: Go allows one per process.
    go_runtime: bool = False


@dataclass(frozen=True)
class BroadcastResult:
    """What one observer made of a broadcast event: its result or its error."""

    name: str
    result: Any = None
    error: PluginError | None = None


@dataclass(frozen=True)
class _Spec:
    """Everything a backend is built from besides the file: a change means a reload."""

    isolated: bool
    guard: GuardLimits
    isolation: IsolationLimits | None

    @classmethod
    def of(cls, cfg: HostConfig, plugin_id: str) -> _Spec:
        """The limits of one plugin: the guard's for every call, the worker's if isolated."""
        entry, defaults = cfg.plugin_entry(plugin_id), cfg.plugins
        max_response = entry.max_response_bytes or defaults.max_response_bytes
        isolated = entry.isolation == "process"
        # The default timeout applies to isolated plugins only: a worker that overruns it
        # is killed, while an in-process call that overruns it can only be abandoned.
        timeout_ms = entry.timeout_ms or (defaults.timeout_ms if isolated else None)
        isolation = None
        if isolated:
            isolation = IsolationLimits(
                memory_limit_mb=entry.memory_limit_mb,
                cpu_limit_s=entry.cpu_limit_s,
                max_response_bytes=max_response,
                fuse_crashes=defaults.fuse_crashes,
                fuse_window_s=defaults.fuse_window_seconds,
                spin_us=defaults.spin_us,
            )
        guard = GuardLimits(
            timeout_s=timeout_ms / 1000 if timeout_ms else None,
            max_concurrent=entry.max_concurrent_requests,
            busy_wait_s=defaults.busy_wait_ms / 1000,
            max_response_bytes=max_response,
            breaker_failures=defaults.breaker_failures,
            breaker_cooldown_s=defaults.breaker_cooldown_seconds,
        )
        return cls(isolated, guard, isolation)


def _stamp(path: Path) -> tuple[int, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


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
        # Applies are serialised by _apply_lock, which may be held while plugins load;
        # _state guards the fields below and is only ever held briefly, so listing and
        # calling never wait for a slow plugin.
        self._apply_lock = threading.Lock()
        self._state = threading.RLock()
        self._slots: dict[str, _Slot] = {}
        self._files: dict[str, PluginFile] = {}
        self._errors: dict[str, str] = {}
        self._loading: set[str] = set()
        self._natives: dict[str, list[NativeHandler]] = {}
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

        Loads what became enabled, reconfigures what changed and unloads the rest. A
        plugin whose selected file changed is swapped: the new library is loaded and
        registered, dispatch switches to it, then the old one is retired once its calls
        in flight have finished. With `reload: restart` in the plugin's config (and for a
        file replaced in place) the old one is shut down first. A reload that fails
        keeps the old version serving.
        """
        with self._apply_lock:
            with self._state:
                if self._closed:
                    return
                if config is not None:
                    self._config = config
                cfg = self._config
            pins = {
                pid: pin
                for pid in cfg.plugins.configs
                if (pin := cfg.plugin_entry(pid).pinned_version) is not None
            }
            found = discover(cfg.plugins_dir(), pins)
            wanted = {
                pid: f
                for pid, f in found.files.items()
                if cfg.plugins.enabled and cfg.plugin_entry(pid).enabled
            }
            with self._state:
                self._files = dict(found.files)
                self._errors = dict(found.problems)
                slots = dict(self._slots)
            retired = [pid for pid in slots if pid not in wanted]
            to_load: dict[str, PluginFile] = {}
            restart: list[str] = []
            for pid, pfile in wanted.items():
                slot = slots.get(pid)
                if slot is None:
                    to_load[pid] = pfile
                elif slot.file.path != pfile.path or slot.stamp != _stamp(pfile.path):
                    to_load[pid] = pfile
                    in_place = slot.file.path == pfile.path
                    if in_place or cfg.plugin_entry(pid).reload == "restart":
                        restart.append(pid)
                elif slot.spec != _Spec.of(cfg, pid) or (
                    slot.config_yaml != cfg.config_yaml(pid)
                    and slot.backend.health().state is State.FUSED
                ):
                    # New limits or isolation need a new backend; a fused plugin gets a
                    # fresh start when its config changes.
                    to_load[pid] = pfile
                    if slot.spec.isolated or cfg.plugin_entry(pid).reload == "restart":
                        restart.append(pid)
                elif slot.config_yaml != cfg.config_yaml(pid):
                    self._reconfigure(pid, slot)

            # Shut down first what must not run beside its successor.
            with self._state:
                stopped = {pid: self._slots.pop(pid) for pid in [*retired, *restart]}
                self._loading = set(to_load)
                self._publish()
            for pid, slot in stopped.items():
                self._retire(pid, slot)
            replaced = self._load_all(to_load)
            for pid, slot in replaced:
                self._retire(pid, slot)
            self._warn_go_runtimes()
        self._notify()

    def _warn_go_runtimes(self) -> None:
        with self._state:
            go = sorted(pid for pid, slot in self._slots.items() if slot.go_runtime)
        if len(go) > 1:
            log.warning(
                "plugins %s are built with Go and run in this process; Go supports one Go "
                "runtime per process, so they may crash the host: set isolation: process "
                "for all but one of them",
                ", ".join(go),
            )

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

    def _load_all(self, files: Mapping[str, PluginFile]) -> list[tuple[str, _Slot]]:
        """Load plugins in parallel, each bounded by the registration timeout.

        Plugins are published as they become ready, all those ready at the same moment in
        one snapshot (one per plugin would make start-up quadratic). Returns the slots that
        the new ones replaced, for the caller to retire.
        """
        timeout = self._config.plugins.registration_timeout_seconds
        deadline = time.monotonic() + timeout
        starts = {pid: self._start_load(pid, f) for pid, f in files.items()}
        by_future = {future: pid for pid, (future, _) in starts.items()}
        pending = set(by_future)
        replaced: list[tuple[str, _Slot]] = []
        while pending:
            remaining = max(0.0, deadline - time.monotonic())
            ready, pending = wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
            if not ready:
                break
            loaded: list[tuple[str, _Slot]] = []
            for future in ready:
                pid = by_future[future]
                try:
                    loaded.append((pid, future.result()))
                except PluginError as exc:
                    self._fail(pid, str(exc))
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
        for future in pending:
            pid = by_future[future]
            starts[pid][1].set()  # a late finish closes what it loaded
            error = RegistrationTimeout(
                f"{files[pid].path} did not finish loading and registering within "
                f"{timeout:g}s; fix the plugin or raise plugins.registration-timeout-seconds",
                plugin_id=pid,
                method=Method.REGISTER,
            )
            self._fail(pid, str(error))
        return replaced

    def _fail(self, plugin_id: str, reason: str) -> None:
        with self._state:
            self._errors[plugin_id] = reason
            self._loading.discard(plugin_id)
        log.error("%s", reason)

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
        stamp = _stamp(pfile.path)
        spec = _Spec.of(self._config, plugin_id)
        if spec.isolation is not None:
            inner: PluginBackend = IsolatedPlugin(
                plugin_id, pfile.path, self._callbacks, spec.isolation
            )
        else:
            inner = self._factory(plugin_id, pfile.path, self._callbacks)
        backend = GuardedBackend(inner, spec.guard)
        try:
            result = backend.call(Method.REGISTER, lifecycle_request(config_yaml))
            registration = parse_registration(result, plugin_id)
        except BaseException:
            self._close_backend(plugin_id, backend)
            raise
        go_runtime = not spec.isolated and built_with_go(pfile.path)
        return _Slot(pfile, backend, registration, config_yaml, stamp, spec, go_runtime)

    def _reconfigure(self, plugin_id: str, slot: _Slot) -> None:
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

    def _retire(self, plugin_id: str, slot: _Slot) -> None:
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
            cfg = self._config
            ids = set(self._files) | set(cfg.plugins.configs) | set(self._errors)
            infos = []
            for pid in ids:
                entry = cfg.plugin_entry(pid)
                slot = self._slots.get(pid)
                pfile = slot.file if slot else self._files.get(pid)
                reg = slot.registration if slot else None
                health = slot.backend.health() if slot else None
                infos.append(
                    PluginInfo(
                        id=pid,
                        path=str(pfile.path) if pfile else None,
                        version=(pfile.version if pfile else None),
                        configured=pid in cfg.plugins.configs,
                        enabled=entry.enabled,
                        registered=slot is not None,
                        loading=pid in self._loading,
                        priority=entry.priority,
                        metadata=reg.metadata.to_json() if reg else None,
                        capabilities=dict(reg.capabilities) if reg else {},
                        error=self._errors.get(pid),
                        isolation=entry.isolation,
                        state=health.state.value if health else None,
                        restarts=health.restarts if health else 0,
                        last_error=health.last_error if health else None,
                        last_signal=health.last_signal if health else None,
                    )
                )
        infos.sort(key=lambda i: (-i.priority, i.id))
        return infos

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
        return self._invoke(record, method, _encode(request))

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
            has_file = plugin_id in self._files
            known = has_file or plugin_id in self._config.plugins.configs
            loading = plugin_id in self._loading
            reason = self._errors.get(plugin_id)
            enabled = self._config.plugin_entry(plugin_id).enabled
            plugins_on = self._config.plugins.enabled
        if not known:
            return PluginNotFound(
                f"no plugin file with ID {plugin_id!r} under {self._config.plugins_dir()}",
                plugin_id=plugin_id,
                method=method,
            )
        if loading:
            message = "still loading; retry in a moment"
        elif reason:
            message = f"not loaded: {reason}"
        elif not has_file:
            message = (
                f"configured, but there is no plugin file {plugin_id}{LIBRARY_SUFFIX} "
                f"under {self._config.plugins_dir()}"
            )
        elif not plugins_on:
            message = "not loaded: plugins are off; set plugins.enabled: true"
        elif not enabled:
            message = f"not loaded: set plugins.configs.{plugin_id}.enabled: true"
        else:
            message = "not loaded"
        return PluginNotLoaded(message, plugin_id=plugin_id, method=method)

    def register_native(self, method: str, name: str, handler: Callable[[Any], Any]) -> None:
        """Add a Python handler for `method`; it runs before any plugin.

        `handler(request)` answers the result, or NOT_HANDLED to let the next one try.
        In a chained stage it answers the fields to replace in the request.
        """
        with self._state:
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
        raise NoHandler(f"nothing handles {method}{hint}", method=method)

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
                    err = NativeHandlerFailed(f"{h.name}: {exc}", method=method)
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
