"""The worker's side of the native line core (linecore.c): load it, hand it the plugin and lines."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

from ...abi import ffi, libc
from ...envelope import failed_call_error
from ...errors import (
    PluginBusy,
    PluginError,
    PluginResponseError,
    PluginUnloading,
    ResponseTooLarge,
)
from ..native import NativePlugin
from . import core_build
from .wire import pack_error

log = logging.getLogger("cliproxy_host.worker")

# The core's functions, over the ABI's own types (see linecore.c for what each does).
_FUNCTIONS: Final = {
    "cw_setup": "int(*)(void*, void*, void*, void*, void*, uint64_t, int, const char*)",
    "cw_host_call": ("int(*)(void*, const char*, const uint8_t*, size_t, cliproxy_buffer*)"),
    "cw_host_free": "void(*)(void*, size_t)",
    "cw_serve_line": "int(*)(int, int)",
    "cw_drain": "int(*)(double)",
    "cw_control_start": "int(*)(int, const char*, void*)",
    "cw_control_send": "int(*)(int, uint64_t, const uint8_t*, size_t)",
    "cw_control_call": "int(*)(const char*, const uint8_t*, size_t, cliproxy_buffer*)",
    "cw_thread_lines": "int(*)(int)",
}


def _bind(path: Path) -> SimpleNamespace:
    """The core's functions from its library; OSError when it cannot be loaded."""
    library, functions = core_build.bind(path, _FUNCTIONS)
    # `library` stays referenced by the namespace: its code must stay mapped.
    return SimpleNamespace(_library=library, **functions)


# The kinds of failed call the core asks Python to word (CW_ERR_* in linecore.c).
_ERR_RC: Final = 1
_ERR_NULL_WITH_LEN: Final = 2
_ERR_TOO_LARGE: Final = 3
_ERR_UNLOADING: Final = 4
_ERR_BUSY: Final = 5


class LineCore:
    """The loaded core: it reads the control socket and serves the call lines, in C."""

    def __init__(self, path: Path) -> None:
        """Load the core's library; OSError when it cannot be loaded."""
        self._lib = _bind(path)
        self._plugin_id = ""
        self._max_response = 0
        # Kept referenced as long as the core may call them: for the life of the process.
        self._error_cb = ffi.callback(
            "int(int, const char*, int, const uint8_t*, size_t, cliproxy_buffer*)",
            self._error,
            error=1,
        )
        self._shutdown_cb: Any = None

    def start_control(self, fd: int, plugin_id: str, on_shutdown: Callable[[float], None]) -> None:
        """Read the control socket on a thread of the core from now on (pings, the host's
        answers, SHUTDOWN, which runs `on_shutdown(drain)`); at its EOF the worker exits."""
        self._plugin_id = plugin_id
        self._shutdown_cb = ffi.callback("void(double)", on_shutdown)
        err = self._lib.cw_control_start(
            fd, plugin_id.encode("utf-8", "replace"), ffi.cast("void*", self._shutdown_cb)
        )
        if err:
            raise OSError(err, f"cannot start the control reader: {os.strerror(err)}")

    def send(self, kind: int, request_id: int, payload: bytes = b"") -> None:
        """Send a frame on the control socket; OSError when the host is gone."""
        if self._lib.cw_control_send(kind, request_id, payload, len(payload)) != 0:
            raise OSError("the control socket is closed")

    def host_call(self, method: str, request: bytes) -> bytes:
        """Ask the host on the control socket and wait for its answer; OSError when the
        host is gone."""
        response = ffi.new("cliproxy_buffer*")
        if self._lib.cw_control_call(method.encode("utf-8"), request, len(request), response):
            raise OSError("the control socket is closed")
        try:
            answer: bytes = ffi.unpack(ffi.cast("char*", response.ptr), response.len)
            return answer
        finally:
            self._lib.cw_host_free(response.ptr, response.len)

    def attach(self, plugin: NativePlugin, max_response: int, spin_us: int, lines_fd: int) -> None:
        """Hand the core the loaded plugin: it serves lines from now on, and the plugin's
        own threads call the host on thread lines passed over `lines_fd` (the lines socket)."""
        self._max_response = max_response
        call, free_buffer, ctx, fallback = plugin.entry_points()
        self._lib.cw_setup(
            ffi.cast("void*", call),
            ffi.cast("void*", free_buffer),
            ctx,
            ffi.cast("void*", fallback),
            ffi.cast("void*", self._error_cb),
            max_response,
            spin_us,
            plugin.plugin_id.encode("utf-8", "replace"),
        )
        err = self._lib.cw_thread_lines(lines_fd)
        if err:
            log.warning(
                "worker for plugin %s: host calls from the plugin's own threads go on the "
                "control socket, which is slower (no thread lines: %s)",
                plugin.plugin_id,
                os.strerror(err),
            )
        # Only once the core is set up: a plugin thread may call the host at any moment.
        plugin.route_host_calls(self._lib.cw_host_call, self._lib.cw_host_free)

    def serve_line(self, fd: int, ring_fd: int = -1) -> int:
        """Serve a call line (and its ring, a memfd, or -1) on a thread of the core, which
        owns both fds from now on; 0, or an errno: no thread to be had (the line's first
        call is answered BUSY) or no memory to map the ring (the line is closed)."""
        result: int = self._lib.cw_serve_line(fd, ring_fd)
        return result

    def drain(self, seconds: float) -> bool:
        """Refuse new calls and wait up to `seconds` for those in flight: whether none is left."""
        return bool(self._lib.cw_drain(seconds))

    # Positional: the C callback's signature (cw_error_fn in linecore.c).
    def _error(self, kind: int, cmethod: Any, rc: int, data: Any, length: int, out: Any) -> int:  # noqa: PLR0917
        """The ERROR payload of a failed call, worded as NativePlugin and the worker word it."""
        method = ffi.string(cmethod).decode("utf-8", "replace")
        error: PluginError
        if kind == _ERR_RC:
            body = ffi.unpack(ffi.cast("char*", data), length) if data else b""
            error = failed_call_error(rc, body, plugin_id=self._plugin_id, method=method)
        elif kind == _ERR_NULL_WITH_LEN:
            error = PluginResponseError(
                f"response pointer is NULL but its length is {length}; set ptr and len together",
                plugin_id=self._plugin_id,
                method=method,
            )
        elif kind == _ERR_TOO_LARGE:
            error = ResponseTooLarge(
                f"the response to {method} is {length} bytes, over max_response_bytes "
                f"({self._max_response}); answer less, or raise the plugin's limit",
            )
        elif kind == _ERR_BUSY:
            error = PluginBusy(
                f"the worker cannot start a thread for {method} ({os.strerror(rc)}); retry "
                "later, or raise the plugin's memory_limit_mb",
                retryable=True,
            )
        elif kind == _ERR_UNLOADING:
            error = PluginUnloading(
                "the plugin is being unloaded; retry once it has been reloaded",
                plugin_id=self._plugin_id,
                method=method,
                retryable=True,
            )
        else:
            return 1
        payload = pack_error(error)
        ptr = libc.malloc(len(payload))
        if not ptr:
            return 1
        ffi.memmove(ptr, payload, len(payload))
        out.ptr = ptr
        out.len = len(payload)
        return 0


def load_core(path: Path, plugin_id: str) -> LineCore | None:
    """The core, or None (logged) when its library cannot be loaded."""
    try:
        return LineCore(path)
    except OSError as exc:
        log.warning(
            "worker for plugin %s: cannot load the native line core %s (%s); serving calls "
            "in Python",
            plugin_id,
            path,
            exc,
        )
        return None
