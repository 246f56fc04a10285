"""The floor: a plugin function called through a bare cffi function pointer, plus orjson.

No host machinery: its own FFI instance (declarations read from the ABI header), a
minimal host API (a constant-answer host callback), one response struct per caller,
and the response decoded by orjson straight from the plugin's memory before it is
freed. Nothing is checked beyond what a call needs to stay memory-safe.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Final

import cffi
import orjson

HEADER: Final = Path(__file__).resolve().parents[2] / "include" / "cliproxy_plugin.h"
_REGION = re.compile(r"/\* CLIPROXY_CDEF_BEGIN \*/(.*?)/\* CLIPROXY_CDEF_END \*/", re.S)

ffi = cffi.FFI()
_match = _REGION.search(HEADER.read_text(encoding="utf-8"))
assert _match is not None, f"{HEADER}: CDEF markers not found"
ffi.cdef(_match.group(1).replace("CLIPROXY_EXPORT", ""))
ffi.cdef("void* malloc(size_t size); void free(void* ptr);")
libc: Any = ffi.dlopen(None)

_FLAGS: Final = 0 if sys.platform == "win32" else os.RTLD_NOW | os.RTLD_LOCAL

# What every host callback answers here: the envelope host.log answers, built once.
CONST_ANSWER: Final = b'{"ok":true,"result":{}}'


def _const_host_call(ctx: Any, method: Any, request: Any, request_len: int, response: Any) -> int:
    ptr = libc.malloc(len(CONST_ANSWER))
    ffi.memmove(ptr, CONST_ANSWER, len(CONST_ANSWER))
    response.ptr = ptr
    response.len = len(CONST_ANSWER)
    return 0


def _host_free(ptr: Any, length: int) -> None:
    libc.free(ptr)


# Module-level so that they outlive every plugin holding a pointer to them.
CONST_HOST_CALL: Final = ffi.callback(
    "int(void*, const char*, const uint8_t*, size_t, cliproxy_buffer*)", _const_host_call
)
HOST_FREE: Final = ffi.callback("void(void*, size_t)", _host_free)


class RawError(Exception):
    pass


class RawPlugin:
    """dlopen + cliproxy_plugin_init + direct calls through the plugin's function pointer."""

    def __init__(self, path: Path) -> None:
        self.lib: Any = ffi.dlopen(str(path), _FLAGS)
        self.host_api: Any = ffi.new("cliproxy_host_api*")
        self.host_api.abi_version = 1
        self.host_api.host_ctx = ffi.cast("void*", 1)
        self.host_api.call = CONST_HOST_CALL
        self.host_api.free_buffer = HOST_FREE
        self.api: Any = ffi.new("cliproxy_plugin_api*")
        rc = self.lib.cliproxy_plugin_init(self.host_api, self.api)
        if rc != 0 or not self.api.call or not self.api.free_buffer:
            ffi.dlclose(self.lib)
            raise RawError(f"{path}: init failed ({rc})")
        self.fn: Any = self.api.call
        self.free: Any = self.api.free_buffer
        self.buffer: Any = ffi.new("cliproxy_buffer*")

    @staticmethod
    def new_buffer() -> Any:
        """A response struct; one per thread that calls (the ABI zeroes it per call)."""
        return ffi.new("cliproxy_buffer*")

    def call_bytes(self, method: bytes, data: bytes, response: Any) -> bytes:
        """The plugin's answer bytes (copied), then free_buffer."""
        self.fn(method, data, len(data), response)
        ptr, length = response.ptr, response.len
        out: bytes = ffi.buffer(ptr, length)[:]
        self.free(ptr, length)
        return out

    def call(self, method: bytes, request: Any, response: Any) -> Any:
        """orjson.dumps, the call, orjson.loads of the answer in place, free_buffer."""
        data = orjson.dumps(request)
        self.fn(method, data, len(data), response)
        ptr, length = response.ptr, response.len
        env = orjson.loads(memoryview(ffi.buffer(ptr, length)))
        self.free(ptr, length)
        if env.get("ok") is not True:
            raise RawError(env)
        return env["result"]

    def close(self) -> None:
        if self.api.shutdown != ffi.NULL:
            self.api.shutdown()
        ffi.dlclose(self.lib)
