"""A PluginStream over an executor's synchronous answer ({"headers", "chunks": [...]})."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..envelope import b64decode, ci_get
from ..errors import PluginResponseError


@dataclass(frozen=True, slots=True)
class Chunk:
    payload: bytes
    error: str = ""


class SyncStream:
    """The chunks a plugin answered at once, handed out one by one until closed."""

    def __init__(self, answer: Any, *, plugin_id: str | None = None) -> None:
        if not isinstance(answer, Mapping):
            raise PluginResponseError(
                "executor.execute_stream must answer an object with headers and chunks",
                plugin_id=plugin_id,
                method="executor.execute_stream",
            )
        raw_headers = ci_get(answer, "headers", None)
        self.headers: Mapping[str, Any] = raw_headers if isinstance(raw_headers, Mapping) else {}
        self._chunks: list[Chunk] = []
        for item in ci_get(answer, "chunks", None) or ():
            if not isinstance(item, Mapping):
                continue
            err = ci_get(item, "error", None) or ci_get(item, "err", None) or ""
            payload = b64decode(ci_get(item, "payload", "") or "", "Payload")
            self._chunks.append(Chunk(payload, str(err) if err else ""))
        self.closed = False

    def __iter__(self) -> Iterator[Chunk]:
        for chunk in self._chunks:
            if self.closed:
                return
            yield chunk

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        for chunk in self:
            yield chunk

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
