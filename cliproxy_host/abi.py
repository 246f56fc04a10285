"""The plugin ABI as Python sees it: cffi types read from the C header, versions, method names."""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import _cffi_backend

from .cache import cache_dir

ABI_VERSION: Final = 1
# The highest registration schema this host understands (ABI.md section 3).
SCHEMA_VERSION: Final = 3

HEADER_NAME: Final = "cliproxy_plugin.h"
_CDEF_REGION = re.compile(r"/\* CLIPROXY_CDEF_BEGIN \*/(.*?)/\* CLIPROXY_CDEF_END \*/", re.S)

# What the host declares beside the header.
_EXTRA_CDEFS: Final = (
    # Host callback responses are allocated with the C runtime's malloc (ABI.md section 1).
    # cliproxy_buffer as the host reads a plugin's response: the same layout, with the
    # pointer typed char* so that ffi.unpack copies the bytes (half the cost of
    # ffi.buffer()[:]). NativePlugin casts the plugin's call() to take it.
    "typedef struct { char* ptr; size_t len; } cliproxy_bytes_out;",
    # strndup (POSIX): malloc and copy in one C call, for answers without NUL bytes.
    "void* malloc(size_t size); void free(void* ptr); void* strndup(const char*, size_t);",
)


def header_path() -> Path:
    """The ABI header: shipped inside the wheel, or the repository's include/ in a checkout."""
    # A plain path first: importlib.resources costs every worker start ~5 ms to import.
    packaged = Path(__file__).with_name(HEADER_NAME)
    if packaged.is_file():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "include" / HEADER_NAME
    if checkout.is_file():
        return checkout
    from importlib import resources  # noqa: PLC0415  (a zipped install only)

    return Path(str(resources.files(__package__ or "cliproxy_host").joinpath(HEADER_NAME)))


def cdef_source(header_text: str) -> str:
    """The declarations between the CDEF markers, in the form cffi's parser accepts."""
    match = _CDEF_REGION.search(header_text)
    if match is None:
        raise RuntimeError(f"{HEADER_NAME}: CLIPROXY_CDEF_BEGIN/END markers not found")
    return match.group(1).replace("CLIPROXY_EXPORT", "")


def declarations() -> str:
    """Every C declaration the host's ffi holds: the header's, then the host's own."""
    return "\n".join((cdef_source(header_path().read_text(encoding="utf-8")), *_EXTRA_CDEFS))


def cached_module(source: str) -> Path:
    """Where the out-of-line cffi module for these declarations is cached."""
    digest = hashlib.sha256(source.encode())
    digest.update(str(_cffi_backend.__version__).encode())
    return cache_dir() / f"abi_ffi_{digest.hexdigest()[:16]}.py"


def _build_ffi() -> Any:
    """The ffi of `declarations()`, loaded from its out-of-line (ABI mode) module.

    Parsing C declarations takes cffi's pycparser, whose import and parse are most of an
    isolated worker's start-up; the module cffi emits from them holds the parsed types,
    and loads without a parser. It is emitted once per declarations and cffi version
    into the user's cache (where the line core is built too); where that cannot be
    written, the declarations are parsed in memory, as slow as before and the same ffi.
    """
    source = declarations()
    target = cached_module(source)
    if not target.is_file():
        built = _emit(source, target)
        if built is not None:
            return built
    spec = importlib.util.spec_from_file_location(target.stem, target)
    if spec is None or spec.loader is None:
        return _parse(source)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (OSError, SyntaxError, ImportError):  # damaged or half-written by an older host
        return _parse(source)
    return module.ffi


def _parse(source: str) -> Any:
    import cffi  # noqa: PLC0415  (only where no cached module can be used)

    ffi = cffi.FFI()
    ffi.cdef(source)
    return ffi


def _emit(source: str, target: Path) -> Any:
    """Emit the module to `target` (written beside it, then renamed: a host starting at
    the same time sees a whole module or none); the parsed ffi if it cannot be written."""
    import tempfile  # noqa: PLC0415  (only the first start after an ABI change)

    import cffi  # noqa: PLC0415

    builder = cffi.FFI()
    builder.cdef(source)
    builder.set_source(target.stem, None, compiler_verbose=False)  # not to stdout
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".abi_ffi-", suffix=".py")
        os.close(fd)
        try:
            builder.emit_python_code(partial)
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
    except OSError:
        return _parse(source)
    return None


ffi: Any = _build_ffi()
libc: Any = ffi.dlopen("ucrtbase.dll" if sys.platform == "win32" else None)

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
