"""Loading plugins: the backend a config asks for, wrapped in the guard, registered, in parallel."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import orjson

from ..abi import SCHEMA_VERSION, HostHandler, Method
from ..backends.guard import GuardedBackend, GuardLimits
from ..backends.isolated.client import IsolatedPlugin
from ..backends.isolated.limits import IsolationLimits
from ..backends.native import built_with_go
from ..backends.program.client import ProgramCommand, ProgramPlugin
from ..backends.program.listener import SocketListener
from ..backends.protocol import PluginBackend
from ..config import HostConfig
from ..discovery import PluginFile
from ..envelope import b64encode
from ..errors import PluginError, PluginLoadError, RegistrationTimeout
from ..trust import TrustPolicy, Verdict, verify_file
from .registry import Registration, parse_registration
from .sockets import is_socket_plugin

log = logging.getLogger(__name__)


class BackendFactory(Protocol):
    """Builds an in-process backend (NativePlugin); `image` is the verified file content."""

    def __call__(
        self, plugin_id: str, path: Path, handler: HostHandler, *, image: bytes | None = None
    ) -> PluginBackend: ...


@dataclass(frozen=True)
class Spec:
    """Everything a backend is built from besides the file: a change means a reload."""

    isolated: bool
    guard: GuardLimits
    isolation: IsolationLimits | None
    trust: TrustPolicy
    command: ProgramCommand | None = None  # a plugin program (docs/PROTOCOL.md)
    connects: bool = False  # a plugin program started elsewhere, on plugins.socket

    @classmethod
    def of(cls, cfg: HostConfig, plugin_id: str) -> Spec:
        """The limits of one plugin: the guard's for every call, the worker's if isolated."""
        entry, defaults = cfg.plugin_entry(plugin_id), cfg.plugins
        max_response = entry.max_response_bytes or defaults.max_response_bytes
        command = program_command(cfg, plugin_id)
        connects = is_socket_plugin(cfg, plugin_id)
        # A program is a process of its own: supervised and timed like an isolated worker.
        isolated = entry.isolation == "process" or command is not None or connects
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
        return cls(isolated, guard, isolation, cfg.trust_policy(plugin_id), command, connects)


def program_command(cfg: HostConfig, plugin_id: str) -> ProgramCommand | None:
    """The plugin's `command` with `cwd` (relative to the config file's folder) and `env`."""
    entry = cfg.plugin_entry(plugin_id)
    if entry.command is None:
        return None
    base = cfg.source_path.parent if cfg.source_path is not None else Path.cwd()
    cwd = base / entry.cwd if entry.cwd else base
    return ProgramCommand(tuple(entry.command), cwd, dict(entry.env or {}))


@dataclass
class Slot:
    """The host's mutable knowledge of one plugin; only touched under the host's lock."""

    file: PluginFile
    backend: GuardedBackend
    registration: Registration
    config_yaml: bytes
    # (inode, size, mtime) of the file when it was loaded: tells an in-place replacement.
    stamp: tuple[int, int, int]
    # How the backend was built (isolation and limits); a change needs a new backend.
    spec: Spec
    # An in-process library with a Go runtime in it: Go allows one per process.
    go_runtime: bool = False
    # What the trust checks found (digest, signer); None when the policy asks for none.
    verdict: Verdict | None = None


def stamp(path: Path) -> tuple[int, int, int]:
    """(inode, size, mtime) of a file, or zeros when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def lifecycle_request(config_yaml: bytes) -> bytes:
    """The plugin.register / plugin.reconfigure request for a plugin's YAML config."""
    return orjson.dumps({"config_yaml": b64encode(config_yaml), "schema_version": SCHEMA_VERSION})


def load_plugin(
    plugin_id: str,
    pfile: PluginFile,
    config_yaml: bytes,
    spec: Spec,
    *,
    callbacks: HostHandler,
    factory: BackendFactory,
    close: Callable[[str, GuardedBackend], None],
    listener: SocketListener | None = None,
) -> Slot:
    """Open the plugin's backend, guard it and register it; `close` undoes a failed load."""
    file_stamp = stamp(pfile.path)
    verdict: Verdict | None = None
    inner: PluginBackend
    if spec.command is not None:
        # A program: its file is a script or binary it runs itself, not a library to verify.
        inner = ProgramPlugin(plugin_id, spec.command, callbacks, spec.isolation)
    elif spec.connects:
        if listener is None:
            raise PluginLoadError(
                f"plugin {plugin_id} has a token but plugins.socket is not set: set it to "
                "the socket its program connects to",
                plugin_id=plugin_id,
            )
        inner = ProgramPlugin(plugin_id, listener, callbacks, spec.isolation)
    else:
        image, verdict = _verified(plugin_id, pfile.path, spec.trust)
        if spec.isolation is not None:
            # The worker loads the file itself: it is told the digest the bytes must have.
            limits = spec.isolation
            if verdict is not None:
                limits = replace(limits, sha256=verdict.sha256)
            inner = IsolatedPlugin(plugin_id, pfile.path, callbacks, limits)
        else:
            inner = factory(plugin_id, pfile.path, callbacks, image=image)
    backend = GuardedBackend(inner, spec.guard)
    try:
        result = backend.call(Method.REGISTER, lifecycle_request(config_yaml))
        registration = parse_registration(result, plugin_id)
    except BaseException:
        close(plugin_id, backend)
        raise
    for warning in registration.warnings:
        log.warning("plugin %s (%s): %s", plugin_id, pfile.path, warning)
    go_runtime = not spec.isolated and built_with_go(pfile.path)
    return Slot(pfile, backend, registration, config_yaml, file_stamp, spec, go_runtime, verdict)


def _verified(
    plugin_id: str, path: Path, policy: TrustPolicy
) -> tuple[bytes | None, Verdict | None]:
    """The file's bytes and verdict when the policy asks for checks, else (None, None)."""
    if not policy.active:
        return None, None
    try:
        return verify_file(path, policy, plugin_id=plugin_id)
    except OSError as exc:
        raise PluginLoadError(
            f"cannot read {path} to verify it: {exc.strerror or exc}", plugin_id=plugin_id
        ) from None


def warn_go_runtimes(slots: Mapping[str, Slot]) -> None:
    """Log a warning when more than one in-process plugin carries a Go runtime."""
    go = sorted(pid for pid, slot in slots.items() if slot.go_runtime)
    if len(go) > 1:
        log.warning(
            "plugins %s are built with Go and run in this process; Go supports one Go "
            "runtime per process, so they may crash the host: set isolation: process "
            "for all but one of them",
            ", ".join(go),
        )


Loaded = list[tuple[str, Slot]]


def load_parallel(
    files: Mapping[str, PluginFile],
    jobs: Mapping[str, Callable[[], Slot]],
    timeout: float,
    close: Callable[[str, GuardedBackend], None],
) -> Iterator[tuple[Loaded, dict[str, str]]]:
    """Run every load job at once; yield (loaded, failed) batches as jobs finish.

    `failed` maps a plugin ID to why its load failed. Jobs still running when `timeout`
    runs out are reported as failed in a last batch; if one finishes later, `close`
    undoes what it loaded, so a late finish never leaks a library.
    """
    deadline = time.monotonic() + timeout
    starts = {pid: _start(pid, job, close) for pid, job in jobs.items()}
    by_future = {future: pid for pid, (future, _) in starts.items()}
    pending = set(by_future)
    while pending:
        remaining = max(0.0, deadline - time.monotonic())
        ready, pending = wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
        if not ready:
            break
        loaded: Loaded = []
        failed: dict[str, str] = {}
        for future in ready:
            pid = by_future[future]
            try:
                loaded.append((pid, future.result()))
            except PluginError as exc:
                failed[pid] = str(exc)
        yield loaded, failed
    late: dict[str, str] = {}
    for future in pending:
        pid = by_future[future]
        starts[pid][1].set()
        error = RegistrationTimeout(
            f"{files[pid].path} did not finish loading and registering within "
            f"{timeout:g}s; fix the plugin or raise plugins.registration-timeout-seconds",
            plugin_id=pid,
            method=Method.REGISTER,
        )
        late[pid] = str(error)
    if late:
        yield [], late


def _start(
    plugin_id: str, job: Callable[[], Slot], close: Callable[[str, GuardedBackend], None]
) -> tuple[Future[Slot], threading.Event]:
    # A daemon thread, not an executor: a plugin stuck in init or register must not
    # keep the interpreter from exiting.
    future: Future[Slot] = Future()
    cancelled = threading.Event()

    def run() -> None:
        try:
            slot = job()
        except BaseException as exc:
            future.set_exception(exc)
            return
        if cancelled.is_set():
            # The host gave up waiting; a late finish must not leak a loaded library.
            close(plugin_id, slot.backend)
            return
        future.set_result(slot)

    threading.Thread(target=run, name=f"load-{plugin_id}", daemon=True).start()
    return future, cancelled
