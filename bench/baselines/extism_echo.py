"""The Extism peer: a wasm echo plugin (bench/plugins/echo.wat), sandboxed in-process.

The WAT is compiled at bench time with `wasmtime.wat2wasm`, then loaded by the Extism
Python SDK; a call is orjson.dumps + Plugin.call + orjson.loads, as the raw baseline's.
Both packages come with the bench extra (`pip install '.[bench]'`, `make bench`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import orjson

WAT: Final = Path(__file__).resolve().parents[1] / "plugins" / "echo.wat"


class ExtismUnavailable(Exception):
    """extism or wasmtime is not installed: the Extism rows are not measured."""


class ExtismEcho:
    """The compiled echo plugin in an Extism Plugin (no WASI)."""

    def __init__(self) -> None:
        try:
            import extism  # noqa: PLC0415 - optional: only the bench extra brings it
            import wasmtime  # noqa: PLC0415
        except ImportError as exc:
            raise ExtismUnavailable(
                f"{exc.name} is not installed: `pip install -e '.[bench]'` (or `make bench`)"
            ) from None
        wasm = bytes(wasmtime.wat2wasm(WAT.read_text(encoding="utf-8")))
        self._plugin = extism.Plugin(wasm, wasi=False)
        self._call = self._plugin.call

    def call(self, method: str, request: Any) -> Any:
        return orjson.loads(self._call(method, orjson.dumps(request)))
