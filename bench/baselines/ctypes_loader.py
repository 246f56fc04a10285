"""What a user would write by hand: a straightforward ctypes loader for the same ABI.

Structures and CFUNCTYPEs transcribed from the header, ``ctypes.CDLL`` to load, the
stdlib ``json`` module for the envelopes, a fresh response struct per call and
``ctypes.string_at`` to copy the answer. ``use_orjson=True`` swaps json for orjson to
show how much of the gap is the JSON library rather than the FFI (informational).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


class Buffer(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t)]


HOST_CALL = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.POINTER(ctypes.c_uint8),
    ctypes.c_size_t,
    ctypes.POINTER(Buffer),
)
FREE_BUFFER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t)
PLUGIN_CALL = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(Buffer)
)
SHUTDOWN = ctypes.CFUNCTYPE(None)


class HostApi(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("host_ctx", ctypes.c_void_p),
        ("call", HOST_CALL),
        ("free_buffer", FREE_BUFFER),
    ]


class PluginApi(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("call", PLUGIN_CALL),
        ("free_buffer", FREE_BUFFER),
        ("shutdown", SHUTDOWN),
    ]


_libc = ctypes.CDLL(ctypes.util.find_library("c") if sys.platform != "win32" else "ucrtbase")
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]

_ANSWER = json.dumps({"ok": True, "result": {}}).encode()


def _host_call(ctx: Any, method: Any, request: Any, length: int, response: Any) -> int:
    ptr = _libc.malloc(len(_ANSWER))
    ctypes.memmove(ptr, _ANSWER, len(_ANSWER))
    response.contents.ptr = ptr
    response.contents.len = len(_ANSWER)
    return 0


def _host_free(ptr: Any, length: int) -> None:
    _libc.free(ptr)


_HOST_CALL = HOST_CALL(_host_call)
_HOST_FREE = FREE_BUFFER(_host_free)


class CtypesPlugin:
    def __init__(self, path: Path, *, use_orjson: bool = False) -> None:
        mode = 0 if sys.platform == "win32" else os.RTLD_NOW | os.RTLD_LOCAL
        self.lib = ctypes.CDLL(str(path), mode=mode)
        init = self.lib.cliproxy_plugin_init
        init.argtypes = [ctypes.POINTER(HostApi), ctypes.POINTER(PluginApi)]
        init.restype = ctypes.c_int
        self.host = HostApi(1, 1, _HOST_CALL, _HOST_FREE)
        self.api = PluginApi()
        if init(ctypes.byref(self.host), ctypes.byref(self.api)) != 0:
            raise RuntimeError(f"{path}: init failed")
        self._dumps: Callable[[Any], bytes]
        self._loads: Callable[[bytes], Any]
        if use_orjson:
            self._dumps, self._loads = orjson.dumps, orjson.loads
        else:
            self._dumps = lambda obj: json.dumps(obj).encode("utf-8")
            self._loads = json.loads

    def call(self, method: str, request: Any) -> Any:
        data = self._dumps(request)
        response = Buffer()
        rc = self.api.call(method.encode("utf-8"), data, len(data), ctypes.byref(response))
        answer = ctypes.string_at(response.ptr, response.len) if response.ptr else b""
        if response.ptr:
            self.api.free_buffer(response.ptr, response.len)
        envelope = self._loads(answer)
        if rc != 0 or not envelope.get("ok"):
            raise RuntimeError(f"{method} failed ({rc}): {envelope.get('error')}")
        return envelope["result"]
