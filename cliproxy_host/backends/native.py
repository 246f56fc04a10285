"""One plugin library loaded in this process: dlopen, init, call, free, shutdown, host callbacks."""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from ..abi import ABI_VERSION, HostHandler, Method, ffi, libc
from ..binfmt import host_target, identify, load_problem, mismatch
from ..envelope import failed_call_error
from ..errors import (
    AbiVersionMismatch,
    PluginError,
    PluginInitFailed,
    PluginLoadError,
    PluginResponseError,
    PluginUnloading,
)
from ..gate import failure_envelope
from .image import LibraryImage, is_loaded
from .protocol import DEFAULT_DRAIN_TIMEOUT, Health

log = logging.getLogger(__name__)

INIT_SYMBOL: Final = "cliproxy_plugin_init"
_DLOPEN_FLAGS: Final = 0 if sys.platform == "win32" else os.RTLD_NOW | os.RTLD_LOCAL
_RUNNING: Final = Health()


# Every Go binary, c-shared libraries included, carries its build info behind this marker.
_GO_BUILDINFO_MAGIC: Final = b"\xff Go buildinf:"


def built_with_go(path: Path) -> bool:
    """Whether the library embeds a Go runtime (Go's -buildmode=c-shared).

    Go supports one Go runtime per process (golang/go#18976, #65050): a second Go-built
    plugin belongs in a worker process.
    """
    try:
        with path.open("rb") as fh:
            return _GO_BUILDINFO_MAGIC in fh.read()
    except OSError:
        return False


# cffi's wording around the loader's message: "cannot load library '<name>': <dlerror>.
# Additionally, ctypes.util.find_library() did not manage to locate a library called ..."
_CFFI_PREFIX: Final = re.compile(r"^cannot load library '.*?': ", re.DOTALL)
_CFFI_SUFFIX: Final = re.compile(
    r"\.?\s+Additionally, ctypes\.util\.find_library\(\).*$", re.DOTALL
)


def dlopen_reason(exc: OSError, path: Path) -> str:
    """The dynamic loader's own reason from a cffi dlopen error, in one line.

    cffi wraps dlerror() in its own text and a find_library() note that only applies to
    bare library names; the loader's reason (e.g. "libfoo.so.1: cannot open shared object
    file: No such file or directory" for a missing dependency) is what tells what to fix.
    """
    text = _CFFI_SUFFIX.sub("", _CFFI_PREFIX.sub("", str(exc)))
    # dlerror() starts with the path that was opened: the caller names it already.
    for name in (str(path.absolute()), str(path)):
        if text.startswith(f"{name}: "):
            text = text[len(name) + 2 :]
            break
    return " ".join(text.split()) or "the dynamic loader gave no reason"


class _HostContext:
    """What a host_ctx pointer stands for: the plugin that calls and where its calls go."""

    __slots__ = ("handler", "plugin_id")

    def __init__(self, plugin_id: str, handler: HostHandler) -> None:
        self.plugin_id = plugin_id
        self.handler = handler


# host_ctx values are small integers, never Python object addresses, so that a stale or
# forged host_ctx is looked up and refused (return 1) instead of dereferenced.
_contexts: dict[int, _HostContext] = {}
_context_ids = itertools.count(1)
# The same entries keyed by the host_ctx pointer itself (cdata pointers hash and compare
# by address): the callback looks a context up without casting the pointer to an int.
_contexts_by_ptr: dict[Any, _HostContext] = {}
try:
    _strndup: Any = libc.strndup
except AttributeError:  # not in the Windows C runtime
    _strndup = None
# Bound once: an attribute lookup on the FFI object costs on every callback.
_string = ffi.string
_unpack = ffi.unpack
# Method names plugins call the host with, decoded once.
_method_names: dict[bytes, str] = {}
_BUFFER_PTR: Final = ffi.typeof("cliproxy_bytes_out*")
_PLUGIN_CALL: Final = ffi.typeof("int(*)(const char*, const uint8_t*, size_t, cliproxy_bytes_out*)")
# Response structs reused per thread: a stack, because a plugin may call the host, which
# may call a plugin again on the same thread while the outer struct is still in use.
_spare = threading.local()


def _on_callback_error(
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> int:
    # Only reached for what _host_call cannot catch itself (MemoryError and the like):
    # never let it propagate into C, and leave the response zeroed as the ABI asks.
    log.error("host callback failed before it could answer", exc_info=(exc_type, exc, tb))  # type: ignore[arg-type]
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    response = tb.tb_frame.f_locals.get("response") if tb is not None else None
    if response:
        response.ptr = ffi.NULL
        response.len = 0
    return 1


def _host_call(ctx: Any, method: Any, request: Any, request_len: int, response: Any) -> int:
    # A NULL cdata pointer is false: cheaper than comparing each with ffi.NULL.
    if not response:
        return 1
    entry = _contexts_by_ptr.get(ctx) if ctx and method else None
    if entry is None:
        response.ptr = ffi.NULL
        response.len = 0
        return 1
    # `response` is zeroed on every way out below, not here: this runs for every callback.
    raw_name = _string(method)
    name = _method_names.get(raw_name)
    if name is None:
        name = raw_name.decode("utf-8", "replace")
        if len(_method_names) < 256:  # plugins call a handful of names; never grow unbounded
            _method_names[raw_name] = name
    # The answer gate, without a wrapper around the handler: this try is needed for the
    # request anyway, and a wrapper would cost a call on every callback.
    try:
        if not request and request_len:
            raise ValueError(f"request pointer is NULL but request_len is {request_len}")
        # `request` is declared const char* (see _HOST_CALL): unpack copies it as bytes.
        data = _unpack(request, request_len) if request_len else b""
        answer = entry.handler(entry.plugin_id, name, data)
    except Exception as exc:  # a callback must never raise into C
        answer = failure_envelope(exc, entry.plugin_id, name)
    # _write_response, inlined: this runs for every host callback.
    try:
        size = len(answer)
        # `0 in`, not `b"\0" in`: an int is looked for with memchr, a bytes needle only
        # after bytes.__contains__ has tried it as an int and raised internally (~200 ns).
        if _strndup is not None and size and 0 not in answer:
            ptr = _strndup(answer, size)  # one C call instead of two (JSON has no raw NUL)
        else:
            ptr = libc.malloc(size or 1)
            if ptr:
                ffi.memmove(ptr, answer, size)
    except Exception:  # a handler that answered something other than bytes
        log.exception("plugin %s: host callback %s answered no bytes", entry.plugin_id, name)
        ptr = ffi.NULL
    if not ptr:
        response.ptr = ffi.NULL
        response.len = 0
        return 1
    response.ptr = ptr
    response.len = size
    return 0


def _host_free(ptr: Any, length: int) -> None:
    libc.free(ptr)  # free(NULL) does nothing


# Module-level, so they outlive every plugin that holds a pointer to them.
# The request is declared `const char*` rather than the header's `const uint8_t*` (the
# same bytes): ffi.unpack then copies it as bytes, at half the cost of ffi.buffer()[:].
_HOST_CALL_IMPL = ffi.callback(
    "int(void*, const char*, const char*, size_t, cliproxy_buffer*)",
    _host_call,
    onerror=_on_callback_error,
)
_HOST_CALL = ffi.cast(
    "int(*)(void*, const char*, const uint8_t*, size_t, cliproxy_buffer*)", _HOST_CALL_IMPL
)
_HOST_FREE = ffi.callback("void(void*, size_t)", _host_free)


class NativePlugin:
    """A plugin library in this process. Thread-safe; calls run without the GIL."""

    # A call in this process cannot be stopped: the guard times it on a thread of its own.
    ends_overruns = False

    def __init__(
        self, plugin_id: str, path: Path, handler: HostHandler, *, image: bytes | None = None
    ) -> None:
        """Load and initialise the library (ABI.md section 1, steps 1-4).

        `image`, when given, is the file's content as the host verified it (trust/): that
        copy is loaded, from memory, never the file on disk again. The steps stay in one
        function, in the ABI's order, so each failure can undo exactly what the steps
        before it did (that order is the point, hence the length).
        """
        self.plugin_id = plugin_id
        self.path = path
        self._image: LibraryImage | None = None
        self._methods: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self._calls: list[None] = []  # one entry per call in flight
        self._closing = False
        self._closed = False
        self._deferred = False

        # The header first: dlopen's own words for a foreign or broken file mislead
        # ("No such file or directory" for a file that exists but is for another CPU).
        if image is None:
            problem = load_problem(path)
        else:
            reason = mismatch(identify(image), host_target())
            problem = None if reason is None else f"cannot load {path}: {reason}"
        if problem is not None:
            raise self._load_error(problem)
        if image is not None:
            self._image = LibraryImage(image, path.name)
        # Absolute: dlopen searches the library path for a bare name like "x.so".
        self.load_path = self._image.path if self._image else path.absolute()
        try:
            self._lib = ffi.dlopen(str(self.load_path), _DLOPEN_FLAGS)
        except OSError as exc:
            self._release_image()
            raise self._load_error(
                f"cannot load {path}: {dlopen_reason(exc, self.load_path)}; install the "
                f"libraries it needs (ldd {path} lists them) or rebuild it for this system"
            ) from None
        try:
            init = getattr(self._lib, INIT_SYMBOL)
        except (AttributeError, ffi.error):  # ffi.error: the out-of-line ffi's (abi.py)
            ffi.dlclose(self._lib)
            self._release_image()
            raise self._load_error(
                f"{path} does not export {INIT_SYMBOL}; export it with C linkage "
                '(CLIPROXY_EXPORT in C, #[no_mangle] pub extern "C" in Rust)'
            ) from None

        self._ctx_id = next(_context_ids)
        context = _HostContext(plugin_id, handler)
        self._ctx_ptr = ffi.cast("void*", self._ctx_id)
        _contexts[self._ctx_id] = context
        _contexts_by_ptr[self._ctx_ptr] = context
        # Plugins keep this pointer: it lives as long as this object is loaded.
        self._host_api = ffi.new("cliproxy_host_api*")
        self._host_api.abi_version = ABI_VERSION
        self._host_api.host_ctx = self._ctx_ptr
        self._host_api.call = _HOST_CALL
        self._host_api.free_buffer = _HOST_FREE
        self._api = ffi.new("cliproxy_plugin_api*")

        rc = init(self._host_api, self._api)
        if rc != 0:
            self._abandon()
            raise self._load_error(
                f"{INIT_SYMBOL} in {path} returned {rc}; the plugin refused to start "
                "(see its log output)",
                PluginInitFailed,
            )
        if self._api.abi_version != ABI_VERSION:
            version = self._api.abi_version
            self._abandon()
            raise self._load_error(
                f"{path} speaks ABI version {version}, this host speaks {ABI_VERSION}; "
                "rebuild the plugin against include/cliproxy_plugin.h",
                AbiVersionMismatch,
            )
        missing = [f for f in ("call", "free_buffer") if getattr(self._api, f) == ffi.NULL]
        if missing:
            self._abandon()
            raise self._load_error(
                f"{INIT_SYMBOL} in {path} left {' and '.join(missing)} NULL; "
                "set every function of cliproxy_plugin_api except shutdown",
                PluginInitFailed,
            )
        self._call = ffi.cast(_PLUGIN_CALL, self._api.call)
        self._free = self._api.free_buffer

    def entry_points(self) -> tuple[Any, Any, Any, Any]:
        """The plugin's call and free_buffer, its host_ctx and the host->call trampoline:
        for a native core that calls this plugin without the GIL (an isolated worker's)."""
        return self._call, self._free, self._ctx_ptr, _HOST_CALL

    def route_host_calls(self, host_call: Any, host_free: Any) -> None:
        """Send the plugin's host calls to `host_call`/`host_free` (C functions that pass
        the trampoline what they do not serve themselves).

        Plugins read host->call when they call (the ABI lets them keep the pointer to the
        table); one that copied the function during init keeps the trampoline, which
        answers the same.
        """
        self._host_api.call = host_call
        self._host_api.free_buffer = host_free

    def _load_error(
        self, message: str, kind: type[PluginLoadError] = PluginLoadError
    ) -> PluginLoadError:
        return kind(message, plugin_id=self.plugin_id)

    def _abandon(self) -> None:
        """Undo a half-finished init: shut down if the plugin set shutdown, then close."""
        if self._api.shutdown != ffi.NULL:
            self._api.shutdown()
        self._release()

    def _release(self) -> None:
        _contexts.pop(self._ctx_id, None)
        _contexts_by_ptr.pop(self._ctx_ptr, None)
        ffi.dlclose(self._lib)
        self._release_image()
        self._closed = True

    def _release_image(self) -> None:
        if self._image is not None:
            self._image.release(still_loaded=is_loaded(self.load_path))
            self._image = None

    def call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        """Send a request envelope; answer the plugin's response envelope bytes (copied).

        `timeout` is ignored (see `ends_overruns`).
        """
        cmethod = self._methods.get(method)
        if cmethod is None:
            cmethod = self._methods.setdefault(method, method.encode("utf-8"))
        # In flight first, then the check: close() sets _closing before it looks at
        # _calls, so either this call sees _closing or close() sees this call.
        # (list.append and list.pop are atomic.)
        calls = self._calls
        calls.append(None)
        if self._closing:
            calls.pop()
            self._drained()
            raise PluginUnloading(
                "the plugin is being unloaded; retry once it has been reloaded",
                plugin_id=self.plugin_id,
                method=method,
                retryable=True,
            )
        try:
            return self._exchange(method, cmethod, request)
        finally:
            calls.pop()
            if self._closing:
                self._drained()

    def _drained(self) -> None:
        """A call left while closing: wake close(), or finish a deferred close."""
        with self._cond:
            if self._calls:
                return
            finish, self._deferred = self._deferred, False
            self._cond.notify_all()
        if finish:
            self._shutdown()

    def _exchange(self, method: str, cmethod: bytes, request: bytes) -> bytes:
        try:
            spare = _spare.structs
        except AttributeError:
            spare = _spare.structs = []
        if spare:
            response = spare.pop()
            response.ptr = ffi.NULL
            response.len = 0
        else:
            response = ffi.new(_BUFFER_PTR)
        rc = self._call(cmethod, request, len(request), response)
        ptr = response.ptr
        length = response.len
        spare.append(response)
        if not ptr:
            if length:
                raise PluginResponseError(
                    f"response pointer is NULL but its length is {length}; "
                    "set ptr and len together",
                    plugin_id=self.plugin_id,
                    method=method,
                )
            data = b""
        else:
            try:
                data = _unpack(ptr, length)  # a char*: bytes, NULs and all
            finally:
                self._free(ptr, length)
        if rc != 0:
            raise failed_call_error(rc, data, plugin_id=self.plugin_id, method=method)
        return data

    def configured(self, request: bytes, timeout: float | None) -> None:
        """Nothing to keep: in this process the plugin lives as long as its config."""

    @property
    def inflight(self) -> int:
        return len(self._calls)

    def close(self, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Shut down (ABI.md section 1): stop calls, drain, plugin.shutdown, shutdown(), dlclose.

        If calls are still running after ``timeout`` seconds, closing is left to the last
        of them to finish: unloading the library under a running call would crash.
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
            if not self._cond.wait_for(lambda: not self._calls, timeout):
                self._deferred = True
                log.warning(
                    "plugin %s: %d call(s) still running after %.1fs; %s is unloaded when "
                    "they return",
                    self.plugin_id,
                    len(self._calls),
                    timeout,
                    self.path,
                )
                return
        self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._exchange(Method.SHUTDOWN, Method.SHUTDOWN.encode(), b"{}")
        except PluginError as exc:
            log.debug("plugin %s: plugin.shutdown not answered: %s", self.plugin_id, exc)
        if self._api.shutdown != ffi.NULL:
            self._api.shutdown()
        self._release()

    @property
    def closed(self) -> bool:
        return self._closed

    def health(self) -> Health:
        # In this process a plugin either answers or takes the host down with it; the
        # states a supervisor tracks (timeouts, breaker) are added by the host's guard.
        return _RUNNING

    def __repr__(self) -> str:
        return f"NativePlugin({self.plugin_id!r}, {str(self.path)!r})"
