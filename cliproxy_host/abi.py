"""The plugin ABI as Python sees it: cffi types read from the C header, versions, method names."""

from __future__ import annotations

import enum
import re
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Final

import cffi

ABI_VERSION: Final = 1
# The highest registration schema this host understands (ABI.md section 3).
SCHEMA_VERSION: Final = 3

HEADER_NAME: Final = "cliproxy_plugin.h"
_CDEF_REGION = re.compile(r"/\* CLIPROXY_CDEF_BEGIN \*/(.*?)/\* CLIPROXY_CDEF_END \*/", re.S)


def header_path() -> Path:
    """The ABI header: shipped inside the wheel, or the repository's include/ in a checkout."""
    packaged = resources.files(__package__ or "cliproxy_host").joinpath(HEADER_NAME)
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "include" / HEADER_NAME


def cdef_source(header_text: str) -> str:
    """The declarations between the CDEF markers, in the form cffi's parser accepts."""
    match = _CDEF_REGION.search(header_text)
    if match is None:
        raise RuntimeError(f"{HEADER_NAME}: CLIPROXY_CDEF_BEGIN/END markers not found")
    return match.group(1).replace("CLIPROXY_EXPORT", "")


def _build_ffi() -> tuple[cffi.FFI, Any]:
    ffi = cffi.FFI()
    ffi.cdef(cdef_source(header_path().read_text(encoding="utf-8")))
    # Host callback responses are allocated with the C runtime's malloc (ABI.md section 1).
    # cliproxy_buffer as the host reads a plugin's response: the same layout, with the
    # pointer typed char* so that ffi.unpack copies the bytes (half the cost of
    # ffi.buffer()[:]). NativePlugin casts the plugin's call() to take it.
    ffi.cdef("typedef struct { char* ptr; size_t len; } cliproxy_bytes_out;")
    # strndup (POSIX): malloc and copy in one C call, for answers without NUL bytes.
    ffi.cdef("void* malloc(size_t size); void free(void* ptr); void* strndup(const char*, size_t);")
    if sys.platform == "win32":
        libc = ffi.dlopen("ucrtbase.dll")
    else:
        libc = ffi.dlopen(None)
    return ffi, libc


ffi, libc = _build_ffi()

LIBRARY_SUFFIX: Final = {"win32": ".dll", "darwin": ".dylib"}.get(sys.platform, ".so")

# A host callback: (plugin ID, method, request envelope bytes) -> response envelope bytes.
HostHandler = Callable[[str, str, bytes], bytes]


class Method(enum.StrEnum):
    """Lifecycle methods every plugin answers."""

    REGISTER = "plugin.register"
    RECONFIGURE = "plugin.reconfigure"
    SHUTDOWN = "plugin.shutdown"


class Mode(enum.Enum):
    """How a method is dispatched over the plugins that provide it (ABI.md section 5)."""

    FIRST = "first"  # the first plugin that handles the request wins
    CHAIN = "chain"  # each plugin's output is the next one's input
    BROADCAST = "broadcast"  # every plugin observes the event


# Capability flag -> the methods it brings (ABI.md section 3).
CAPABILITY_METHODS: Final[dict[str, tuple[str, ...]]] = {
    "model_registrar": ("model.register",),
    "model_provider": ("model.static", "model.for_auth"),
    "auth_provider": (
        "auth.identifier",
        "auth.parse",
        "auth.login.start",
        "auth.login.poll",
        "auth.refresh",
    ),
    "frontend_auth_provider": ("frontend_auth.identifier", "frontend_auth.authenticate"),
    "scheduler": ("scheduler.pick",),
    "model_router": ("model.route",),
    "executor": (
        "executor.identifier",
        "executor.execute",
        "executor.execute_stream",
        "executor.count_tokens",
        "executor.http_request",
    ),
    "request_translator": ("request.translate",),
    "request_normalizer": ("request.normalize",),
    "request_interceptor": ("request.intercept_before", "request.intercept_after"),
    "request_lifecycle_plugin": ("request.complete",),
    "response_translator": ("response.translate",),
    "response_before_translator": ("response.normalize_before",),
    "response_after_translator": ("response.normalize_after",),
    "response_interceptor": ("response.intercept_after",),
    "response_stream_interceptor": ("response.intercept_stream_chunk",),
    "thinking_applier": ("thinking.identifier", "thinking.apply"),
    "usage_plugin": ("usage.handle",),
    "command_line_plugin": ("command_line.register", "command_line.execute"),
    "management_api": ("management.register", "management.handle"),
}

# Boolean flags that qualify another capability rather than bring methods of their own.
QUALIFIER_FLAGS: Final = frozenset({"frontend_auth_provider_exclusive"})

METHOD_CAPABILITY: Final[dict[str, str]] = {
    method: flag for flag, methods in CAPABILITY_METHODS.items() for method in methods
}

# Stages whose output is the next plugin's input, and events every plugin observes.
# Everything else is FIRST.
_CHAINED: Final = frozenset(
    {
        "request.normalize",
        "request.intercept_before",
        "request.intercept_after",
        "response.normalize_before",
        "response.normalize_after",
        "response.intercept_after",
        "response.intercept_stream_chunk",
    }
)
_OBSERVED: Final = frozenset({"request.complete", "usage.handle"})


def method_mode(method: str) -> Mode:
    """The dispatch mode of a capability method."""
    if method in _CHAINED:
        return Mode.CHAIN
    if method in _OBSERVED:
        return Mode.BROADCAST
    return Mode.FIRST
