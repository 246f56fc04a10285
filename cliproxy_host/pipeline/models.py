"""The pipeline's request, answer, chunk and model-list entry: frozen, typed, lean."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from ..envelope import b64decode, ci_get
from ..errors import InvalidRequest, PluginError
from .formats import DEFAULT_FORMAT, canonical

Headers = Mapping[str, tuple[str, ...]]
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def headers_of(raw: Any) -> dict[str, tuple[str, ...]]:
    """Headers as the Go host sends them ({name: [values]}), from any plugin's spelling."""
    if type(raw) is dict:
        if not raw:  # the common answer; skips the Mapping check, an ABC call
            return {}
    elif not isinstance(raw, Mapping):
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for name, values in raw.items():
        if isinstance(values, str):
            out[str(name)] = (values,)
        elif isinstance(values, list | tuple):
            out[str(name)] = tuple(str(v) for v in values)
    return out


def headers_json(headers: Headers) -> dict[str, list[str]]:
    if not headers:
        return {}
    return {name: list(values) for name, values in headers.items()}


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """A model request as a client made it (the Go host's ProtocolExecutionRequest).

    `entry_format` is the client's protocol, `exit_format` the one it wants back (empty:
    the entry format); both take the Go host's aliases ("chat-completions", "anthropic").
    """

    model: str
    body: bytes = b""
    entry_format: str = DEFAULT_FORMAT
    exit_format: str = ""
    stream: bool = False
    headers: Headers = field(default_factory=dict)
    query: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    alt: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # The plugin that asked for this run through host.model.*: its own interceptors,
    # router and request.complete are skipped, and no usage is reported (as upstream).
    caller: str = ""
    # The plugins that may execute it (None: any); a client key's `plugins` list. A host
    # handler is not a plugin and is not limited by it.
    executors: frozenset[str] | None = None
    # The canonical formats, worked out once (every stage's request carries them).
    source_format: str = field(init=False, repr=False, compare=False)
    response_format: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        source = canonical(self.entry_format) or DEFAULT_FORMAT
        object.__setattr__(self, "source_format", source)
        object.__setattr__(self, "response_format", canonical(self.exit_format) or source)

    @classmethod
    def of(cls, value: ModelRequest | Mapping[str, Any]) -> ModelRequest:
        """A ModelRequest from itself or from host.model.* JSON (entry_protocol, body in base64)."""
        if isinstance(value, ModelRequest):
            return value
        if not isinstance(value, Mapping):
            raise InvalidRequest(f"a model request is a JSON object, got {type(value).__name__}")
        model = ci_get(value, "model")
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequest('a model request needs a non-empty "model" string')
        body = ci_get(value, "body", b"")
        raw = body if isinstance(body, bytes) else b64decode(body or "", "body")
        return cls(
            model=model.strip(),
            body=raw,
            entry_format=str(ci_get(value, "entry_protocol", "") or DEFAULT_FORMAT),
            exit_format=str(ci_get(value, "exit_protocol", "") or ""),
            stream=bool(ci_get(value, "stream", False)),
            headers=headers_of(ci_get(value, "headers")),
            query=headers_of(ci_get(value, "query")),
            alt=str(ci_get(value, "alt", "") or ""),
        )


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """A finished non-streaming run: the body in the client's format, headers, who served it.

    `problems` holds the errors of stages that failed and were skipped (as the Go host
    skips them), each naming its plugin and method.
    """

    body: bytes
    headers: Headers
    executor: str
    request_id: str
    status_code: int = 200
    problems: tuple[PluginError, ...] = ()


# The slots of ModelResponse, set directly: a frozen dataclass's __init__ goes through
# object.__setattr__ once per field, which cost about a microsecond, more than the rest
# of a pass-through pipeline run's own bookkeeping; new_response makes the same object
# in about half the time.
_SET_BODY, _SET_HEADERS, _SET_EXECUTOR, _SET_REQUEST_ID, _SET_STATUS, _SET_PROBLEMS = (
    ModelResponse.__dict__[name].__set__
    for name in ("body", "headers", "executor", "request_id", "status_code", "problems")
)
# A field added to ModelResponse must be set by new_response too.
assert len(fields(ModelResponse)) == 6, "new_response sets every field of ModelResponse"


def new_response(
    body: bytes,
    headers: Headers,
    executor: str,
    request_id: str,
    *,
    status_code: int,
    problems: tuple[PluginError, ...],
) -> ModelResponse:
    """ModelResponse(body, headers, executor, request_id, status_code, problems), faster."""
    obj: ModelResponse = object.__new__(ModelResponse)
    _SET_BODY(obj, body)
    _SET_HEADERS(obj, headers)
    _SET_EXECUTOR(obj, executor)
    _SET_REQUEST_ID(obj, request_id)
    _SET_STATUS(obj, status_code)
    _SET_PROBLEMS(obj, problems)
    return obj


@dataclass(frozen=True, slots=True)
class ModelChunk:
    """One chunk delivered to the client, after translation and stream interceptors."""

    payload: bytes
    index: int


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model of host.models(): where it came from and which executor serves it."""

    id: str
    provider: str
    plugin_id: str
    source: str  # "model.static", "model.register" or "model.for_auth"
    executor: str = ""
    info: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
