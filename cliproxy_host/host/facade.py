"""PluginHost: the façade that applies a config to the loaded plugins and routes work to them."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from functools import partial
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from ..abi import HostHandler, Method
from ..backends.guard import GuardedBackend
from ..backends.native import NativePlugin
from ..backends.protocol import Health, State
from ..callbacks import HostCallbacks
from ..callbacks.events import EventBus
from ..callbacks.scopes import FIELD, SCOPED_METHODS, Scope, ScopeTable
from ..callbacks.services import Provider
from ..callbacks.streams import StreamTable
from ..config import HostConfig
from ..discovery import PluginFile
from ..errors import ConfigError, PluginError, PluginUnloading
from ..observe.metrics import SAMPLE_EVERY, CallSeries, Metrics, PluginStatus
from ..observe.tracing import plugin_tracer, traced
from ..pipeline import ModelChunk, ModelEntry, ModelRequest, ModelResponse, Pipeline
from . import dispatch, reconcile
from .dispatch import NOT_HANDLED, BroadcastResult, NativeHandlers, encode
from .listing import (
    PluginInfo,
    credentials_warning,
    describe,
    plugins_off_reason,
    unavailable,
)
from .loader import (
    BackendFactory,
    Slot,
    Spec,
    lifecycle_request,
    load_parallel,
    load_plugin,
    warn_go_runtimes,
)
from .pipeline_source import HostSource
from .registry import (
    ConfigField,
    NativeHandler,
    Record,
    Registration,
    Snapshot,
    parse_registration,
)
from .sockets import ProgramSockets
from .stream import PluginStream, parse_answer

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
        # Streams and scopes live in the callbacks that answer host.stream.* and read
        # echoed ids; a host given other callbacks keeps its own (its plugins cannot emit).
        if isinstance(callbacks, HostCallbacks):
            self._streams, self._scopes = callbacks.streams, callbacks.scopes
            self._events = callbacks.events
            callbacks.permissions.configure(config)  # the rest was built from this config
        else:
            self._streams, self._scopes = StreamTable(), ScopeTable()
            self._events = EventBus()
        # Events reach a plugin as its method event.handle, on the subscriber's thread.
        self._events.attach(lambda plugin_id, event: self.call(plugin_id, "event.handle", event))
        self._factory = backend_factory
        # Applies are serialised by _apply_lock, which may be held while plugins load;
        # _state guards the fields below and is only ever held briefly, so listing and
        # calling never wait for a slow plugin.
        self._apply_lock = threading.Lock()
        self._state = threading.RLock()
        self._slots: dict[str, Slot] = {}
        self._files: dict[str, PluginFile] = {}
        self._errors: dict[str, str] = {}
        # The ConfigFields each plugin declared when it last registered in this process:
        # a disabled plugin's config is checked against them, as a loaded one's is.
        self._declared: dict[str, tuple[ConfigField, ...]] = {}
        self._dir_error: str | None = None
        self._loading: set[str] = set()
        self._natives = NativeHandlers()
        self._listeners: list[Callable[[], None]] = []
        # Readers take this reference once per call and never see a half-applied config.
        self._snapshot = Snapshot()
        self._closed = False
        # Read once: whether calls are counted is fixed for the host's life.
        self._metrics = (
            Metrics(self._plugin_status, self._streams.open_per_plugin, plugin_tracer)
            if config.metrics.enabled
            else None
        )
        if self._metrics is not None:
            self._metrics.set_queue_depths(self._event_queue_depths)
        self._sockets = ProgramSockets(self._arrived)
        self._pipeline = Pipeline(
            HostSource(lambda: self._snapshot, self._natives, self.call, self.call_stream)
        )
        if isinstance(callbacks, HostCallbacks):
            # host.model.* runs on this pipeline; the host's callbacks are built first
            # (backends need them), so the pipeline is handed over here.
            callbacks.models.attach(
                self._pipeline,
                timeout=self._call_timeout,
                depth=lambda: self._config.plugins.model_call_depth,
            )
            callbacks.plugin_calls.attach(
                self.call,
                self._plugin_dispatch,
                timeout=self._call_timeout,
                depth=lambda: self._config.plugins.plugin_call_depth,
            )

    @classmethod
    def from_config(cls, path: str | Path, **kwargs: Any) -> PluginHost:
        """Read the YAML config at `path`, then discover, load and register its plugins."""
        host = cls(HostConfig.load(Path(path)), **kwargs)
        try:
            host.apply()
        except BaseException:
            host.close()
            raise
        return host

    @property
    def config(self) -> HostConfig:
        return self._config

    @property
    def metrics(self) -> Metrics | None:
        """The host's metrics (None with `metrics.enabled: false`)."""
        return self._metrics

    def _event_queue_depths(self) -> dict[str, int]:
        """Events waiting for each subscriber (a plugin, or a Python subscription's name),
        summed over its subscriptions: the bus's gauge in /metrics."""
        depths: dict[str, int] = {}
        for sub in self._events.stats():
            depths[sub.owner] = depths.get(sub.owner, 0) + sub.queued
        return depths

    def _plugin_status(self) -> list[PluginStatus]:
        """Every loaded plugin's state, restarts and breaker, for a scrape."""
        with self._state:
            slots = list(self._slots.items())
        statuses = []
        for pid, slot in slots:
            health = slot.backend.health()
            statuses.append(
                PluginStatus(pid, health.state.value, health.restarts, slot.backend.breaker)
            )
        return statuses

    @property
    def plugins_dir_error(self) -> str | None:
        """Why the last apply could not use the plugins dir (the config before it stays
        in force); None when it could."""
        with self._state:
            return self._dir_error

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
                cfg = self._config if config is None else config
                slots = dict(self._slots)
            try:
                self._sockets.update(cfg)
                steps = reconcile.plan(cfg, slots, self._sockets.connected())
            except ConfigError as exc:
                # An unusable plugins dir: keep what is loaded, and the config it runs with.
                # Logged first: whoever sees the error in the listing finds it in the log.
                log.error("%s; the previous config stays in force", exc)
                with self._state:
                    self._dir_error = str(exc)
                raise
            off = plugins_off_reason(cfg)
            if off is not None and slots:
                log.warning("%s: unloading %s", off, ", ".join(sorted(slots)))
            with self._state:
                self._config = cfg
                if isinstance(self._callbacks, HostCallbacks):
                    self._callbacks.configure(cfg)
                self._dir_error = None
                self._files = steps.files
                self._errors = steps.problems
                self._errors.update(self._unloaded_settings_errors(cfg))
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

    def _arrived(self, plugin_id: str) -> None:
        """A program connected to plugins.socket as `plugin_id`: load it, or give a fused
        one a fresh start (a loaded one that lost its program takes the connection itself)."""
        with self._state:
            slot = self._slots.get(plugin_id)
            if self._closed or plugin_id in self._loading:
                return
        if slot is None:
            job: Callable[[], None] = self.apply
        elif slot.backend.health().state is State.FUSED:
            job = partial(self.restart, plugin_id)
        else:
            return
        threading.Thread(target=_logged(job), name=f"arrived-{plugin_id}", daemon=True).start()

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
        for ready, failed in batches:
            loaded = self._fitting(ready, cfg)
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
                warning = credentials_warning(pid, cfg)
                if warning is not None:
                    log.warning("%s", warning)
        return replaced

    def _fitting(self, ready: list[tuple[str, Slot]], cfg: HostConfig) -> list[tuple[str, Slot]]:
        """The plugins just loaded whose settings fit their ConfigFields; the others are
        shut down again with the reason as their error (only a registration says which
        fields a plugin has, so a plugin's config is checked when it loads)."""
        fitting = []
        for pid, slot in ready:
            problem = reconcile.settings_error(pid, slot.registration, cfg.plugin_entry(pid))
            if problem is None:
                fitting.append((pid, slot))
                continue
            self._close_backend(pid, slot.backend)
            self._fail(pid, f"not loaded, its config breaks its ConfigFields: {problem}")
        return fitting

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
            listener=self._sockets.listener,
        )

    def _reconfigure(self, plugin_id: str, slot: Slot) -> None:
        problem = reconcile.settings_error(
            plugin_id, slot.registration, self._config.plugin_entry(plugin_id)
        )
        if problem is not None:
            # The rule the management API applies before writing, applied to a hand edit.
            self._fail(plugin_id, f"config not applied, previous config kept: {problem}")
            return
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

    def _unloaded_settings_errors(self, cfg: HostConfig) -> dict[str, str]:
        """Plugins that stay unloaded (disabled) whose settings break the ConfigFields they
        declared when last loaded here: listed and logged as a loaded plugin's would be."""
        errors = {}
        for pid in cfg.plugins.configs:
            fields = self._declared.get(pid)
            if fields is None or (cfg.plugins.enabled and cfg.plugin_entry(pid).enabled):
                continue  # an enabled plugin's settings are checked as it loads
            problem = reconcile.fields_error(pid, fields, cfg.plugin_entry(pid))
            if problem is not None:
                errors[pid] = f"its config breaks the ConfigFields it declared: {problem}"
                log.warning("plugin %s (not loaded): %s", pid, errors[pid])
        return errors

    def declared_fields(self, plugin_id: str) -> tuple[ConfigField, ...] | None:
        """The ConfigFields the plugin declares now, or declared when it was last loaded in
        this process; None when it never registered here."""
        with self._state:
            return self._declared.get(plugin_id)

    def _publish(self) -> None:
        cfg = self._config
        self._declared.update(
            (pid, slot.registration.metadata.config_fields) for pid, slot in self._slots.items()
        )
        self._snapshot = Snapshot(
            Record(
                pid,
                cfg.plugin_entry(pid).priority,
                slot.backend,
                slot.registration,
                series=self._series(pid),
            )
            for pid, slot in self._slots.items()
        )
        self._events.sync(
            {pid: slot.registration.subscriptions for pid, slot in self._slots.items()}
        )
        if isinstance(self._callbacks, HostCallbacks):
            self._callbacks.services.update(
                Provider(pid, service.name, service.version, cfg.plugin_entry(pid).priority)
                for pid, slot in self._slots.items()
                for service in slot.registration.services
            )

    def _series(self, plugin_id: str) -> CallSeries | None:
        """The plugin's call series, made when it first registers (with metrics on)."""
        return self._metrics.plugin(plugin_id) if self._metrics is not None else None

    def _retire(self, plugin_id: str, slot: Slot) -> None:
        self._close_backend(plugin_id, slot.backend)
        log.info("plugin %s unloaded (%s)", plugin_id, slot.file.path)

    def _close_backend(self, plugin_id: str, backend: GuardedBackend) -> None:
        # Its streams first: an emit blocked on a full stream would hold up its shutdown.
        self._streams.close_plugin(plugin_id, backend)
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
            self._events.close()
            for pid, slot in slots.items():
                self._retire(pid, slot)
            self._sockets.close()
            self._streams.shutdown()
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

    @property
    def scopes(self) -> ScopeTable:
        """The open host_callback_id scopes (a caller may open one to pass as callback_id)."""
        return self._scopes

    def call(self, plugin_id: str, method: str, request: Any = None) -> Any:
        """Call one plugin directly; answer its result or raise its PluginError.

        A method of ABI.md's host_callback_id list gets a fresh `host_callback_id` in its
        request (unless it has one), whose scope lasts for the call.
        """
        record = self._snapshot.get(plugin_id)
        if record is None:
            raise self._unavailable(plugin_id, method)
        if method in SCOPED_METHODS and isinstance(request, Mapping) and FIELD not in request:
            scope = self._scopes.open(plugin_id, method)
            try:
                return self._invoke(record, method, encode({**request, FIELD: scope.callback_id}))
            finally:
                self._scopes.end(scope.callback_id)
        return self._invoke(record, method, encode(request))

    def call_stream(
        self,
        plugin_id: str,
        method: str,
        request: Mapping[str, Any],
        *,
        callback_id: str | None = None,
    ) -> PluginStream:
        """Call `executor.execute_stream` (or a method like it) and stream its chunks.

        The request gets `stream_id` (a decimal string from a per-host counter) and
        `host_callback_id`: `callback_id` if that scope is open (the stream is then also
        aborted when that scope ends), else a fresh scope that ends with the stream. An
        answer with chunks is the whole stream; an answer without is an async stream
        the plugin feeds with host.stream.emit and ends with host.stream.close.
        """
        record = self._snapshot.get(plugin_id)
        if record is None:
            raise self._unavailable(plugin_id, method)
        entry, defaults = self._config.plugin_entry(plugin_id), self._config.plugins
        # Waiting for a chunk runs no plugin code, so every plugin's stream is timed.
        timeout_s = (entry.timeout_ms or defaults.timeout_ms) / 1000
        max_bytes = entry.max_response_bytes or defaults.max_response_bytes
        # Half the timeout for an emit waiting for room, so that a plugin stuck emitting
        # before it answers still answers within the call's own timeout.
        stream = self._streams.open(plugin_id, max_bytes, record.backend, timeout_s / 2)
        outer = self._scopes.get(callback_id) if callback_id is not None else None
        scope: Scope = outer or self._scopes.open(plugin_id, method)
        if outer is not None:
            # The caller's scope may end first (its request timed out): the stream too.
            self._scopes.add_cleanup(scope.callback_id, partial(self._streams.forget, stream))

        def finish() -> None:
            self._streams.forget(stream)
            if outer is None:
                self._scopes.end(scope.callback_id)

        body = {**request, "stream_id": stream.stream_id, FIELD: scope.callback_id}
        try:
            result = self._invoke(record, method, encode(body))
            headers, chunks = parse_answer(result, plugin_id, method)
        except BaseException:
            finish()
            raise
        if chunks:  # the synchronous form: the answer is the whole stream
            finish()
            return PluginStream(headers, chunks=chunks, plugin_id=plugin_id, method=method)
        return PluginStream(
            headers,
            stream=stream,
            timeout=timeout_s,
            finish=finish,
            plugin_id=plugin_id,
            method=method,
        )

    def _call_timeout(self, plugin_id: str) -> float:
        """A plugin's call timeout in seconds: its own timeout-ms, else the host's."""
        entry = self._config.plugin_entry(plugin_id)
        return (entry.timeout_ms or self._config.plugins.timeout_ms) / 1000

    def _invoke(self, record: Record, method: str, data: bytes, in_span: bool = False) -> Any:
        """The result of one call through the plugin's guard, which decodes and counts it;
        with metrics on, counted in the plugin's series (and traced, if set up).

        The series' updates are written out here rather than in a method of the series: a
        call frame more costs a tenth of what metrics may add to an in-process call.
        MethodCounts documents the layout and why no lock is needed; SAMPLE_EVERY why
        only some calls are timed.
        """
        series = record.series
        if series is None:
            try:
                return record.backend.call(method, data)
            except PluginUnloading as exc:
                return self._on_successor(record, method, data, exc)
        if series.tracer is not None and not in_span:
            count = partial(self._invoke, record, method, data, True)
            return traced(series.tracer, record.plugin_id, method, count)
        counts = series.methods.get(method) or series.add(method)
        started = counts.started
        counts.started = started + 1
        timed = not started % SAMPLE_EVERY
        start = perf_counter_ns() if timed else 0
        try:
            try:
                return record.backend.call(method, data)
            except PluginUnloading as exc:
                return self._on_successor(record, method, data, exc)
        except PluginError as exc:
            counts.failed(exc.code)
            raise
        finally:
            counts.finished += 1
            if timed:
                elapsed = perf_counter_ns() - start
                counts.sum_ns += elapsed
                counts.buckets[elapsed.bit_length()] += 1

    def _on_successor(
        self, record: Record, method: str, data: bytes, refusal: PluginUnloading
    ) -> Any:
        """A call the record refused with PluginUnloading, retried on its successor (the
        refusal again when it has none).

        A caller can pick a record just before a swap retires it. The refusal comes before
        the plugin saw the request, so the successor can safely take it.
        """
        successor = self._snapshot.get(record.plugin_id)
        if successor is None or successor is record:
            raise refusal
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
        with self._state:
            # A new snapshot: views cached per snapshot (the pipeline's stage lists) see it.
            self._publish()

    def providers(self, method: str) -> list[str]:
        """The IDs of the enabled plugins whose capabilities bring `method`, in dispatch
        order (the application's native handlers are not among them)."""
        return [record.plugin_id for record in self._snapshot.providers(method)]

    def dispatch(self, method: str, request: Mapping[str, Any]) -> Any:
        """Route a capability method over native handlers and plugins by its mode.

        FIRST answers the first handler's result, CHAIN the request as the stages left it,
        BROADCAST a BroadcastResult per observer (see host/dispatch.py).
        """
        handlers = self._natives.order(method, self._snapshot.providers(method))
        scoped = method in SCOPED_METHODS and FIELD not in request
        return dispatch.run(method, handlers, request, self._scoped if scoped else self._invoke)

    def _plugin_dispatch(
        self, method: str, request: Mapping[str, Any], may_take: Callable[[str], bool]
    ) -> Any:
        """`dispatch` for host.dispatch: only the plugins `may_take` admits take part."""
        providers = [r for r in self._snapshot.providers(method) if may_take(r.plugin_id)]
        handlers = self._natives.order(method, providers)
        scoped = method in SCOPED_METHODS and FIELD not in request
        return dispatch.run(method, handlers, request, self._scoped if scoped else self._invoke)

    @property
    def events(self) -> EventBus:
        """The event bus: `publish(topic, data)`, `subscribe(pattern, fn)`, `unsubscribe(id)`;
        plugins reach it through host.event.* and event.handle."""
        return self._events

    def _scoped(self, record: Record, method: str, data: bytes) -> Any:
        """`_invoke` in a fresh host_callback_id scope of this plugin for this call."""
        scope = self._scopes.open(record.plugin_id, method)
        try:
            return self._invoke(record, method, with_callback_id(data, scope.callback_id))
        finally:
            self._scopes.end(scope.callback_id)

    # -- the model pipeline ----------------------------------------------------------

    def models(self, auths: tuple[Mapping[str, Any], ...] = ()) -> list[ModelEntry]:
        """Every model the plugins offer, merged as the Go host does (pipeline/catalog.py)."""
        return self._pipeline.models(auths)

    def execute(self, request: ModelRequest | Mapping[str, Any]) -> ModelResponse:
        """Run a model request through the pipeline (docs/PIPELINE.md) to its answer."""
        return self._pipeline.execute(request)

    def execute_stream(
        self, request: ModelRequest | Mapping[str, Any]
    ) -> Generator[ModelChunk, None, None]:
        """A streamed model request: its chunks; close the iterator to cancel the run."""
        return self._pipeline.execute_stream(request)

    def aexecute_stream(
        self, request: ModelRequest | Mapping[str, Any]
    ) -> AsyncIterator[ModelChunk]:
        """execute_stream for asyncio."""
        return self._pipeline.aexecute_stream(request)


def with_callback_id(data: bytes, callback_id: str) -> bytes:
    """A JSON object's bytes (as `encode` writes them) with host_callback_id added.

    Spliced rather than re-encoded: dispatch encodes a request once for all its handlers.
    """
    if not data.startswith(b"{") or not data.endswith(b"}"):
        return data
    field = b'"host_callback_id":"' + callback_id.encode("ascii") + b'"'
    return b"{" + field + (b"}" if data == b"{}" else b"," + data[1:])


def _logged(job: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            job()
        except Exception:  # a thread of its own: nobody else would see it
            log.exception("loading a plugin program that connected to plugins.socket failed")

    return run
