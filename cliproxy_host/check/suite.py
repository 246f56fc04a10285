"""`cliproxy-host check`: a conformance suite that runs one plugin file through the ABI contract."""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import itertools
import os
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

import orjson
from ruamel.yaml import YAML

from ..abi import (
    ABI_VERSION,
    CAPABILITY_METHODS,
    LIBRARY_SUFFIX,
    QUALIFIER_FLAGS,
    HostHandler,
    Method,
)
from ..backends.native import INIT_SYMBOL, NativePlugin
from ..backends.protocol import PluginBackend
from ..discovery import is_valid_id, parse_name
from ..envelope import b64encode, ci_get, decode, ok
from ..errors import (
    DECLINE_CODES,
    AbiVersionMismatch,
    HostCallFailed,
    InvalidRequest,
    PluginCallFailed,
    PluginCrashed,
    PluginError,
    PluginInitFailed,
    PluginLoadError,
    PluginResponseError,
    PluginTimeout,
    PluginUnavailable,
)
from ..host.facade import lifecycle_request
from ..host.registry import ConfigField, Registration, parse_registration

Status = Literal["pass", "fail", "warn", "skip"]
BackendFactory = Callable[[str, Path, HostHandler], PluginBackend]
_T = TypeVar("_T")

CALL_TIMEOUT: Final = 5.0
LOAD_TIMEOUT: Final = 10.0
THREADS: Final = 8
CONCURRENCY_SECONDS: Final = 1.0
LARGE_REQUEST_BYTES: Final = 1 << 20
CYCLES: Final = 100
# Each isolated cycle starts a worker process (about 0.5 s) and loads the library into a
# fresh process, so re-initialisation within one process is only tested in-process.
ISOLATED_CYCLES: Final = 3
RUN_GOAL_SECONDS: Final = 5.0
UNKNOWN_METHOD: Final = "check.no_such_method"
# What the host sends a plugin that is switched on with no settings of its own.
BASE_CONFIG: Final = {"enabled": True, "priority": 0}
# Growth after the load/unload cycles that counts as a leak rather than noise.
_FD_SLACK: Final = 3
_THREAD_SLACK: Final = 1
_MAX_LISTED: Final = 3
_ISOLATED_SLACK: Final = 3.0

_LOAD_STEPS: Final = ("loads", "exports init", "init returns 0", "ABI version", "function table")
_LOAD_FIXES: Final = (
    "build a shared library for this OS and architecture, and install the libraries it "
    "links against",
    f"export `int {INIT_SYMBOL}(const cliproxy_host_api*, cliproxy_plugin_api*)` with C "
    'linkage: CLIPROXY_EXPORT in C, #[no_mangle] pub extern "C" in Rust',
    f"return 0 from {INIT_SYMBOL} once the plugin is ready; a plugin that cannot start "
    "should say why through host.log first",
    f"set plugin->abi_version = CLIPROXY_ABI_VERSION ({ABI_VERSION}) and build against "
    "include/cliproxy_plugin.h",
    f"set plugin->call and plugin->free_buffer in {INIT_SYMBOL} (only shutdown may stay NULL)",
)
_ENVELOPE_FIX: Final = (
    'return 0 with a UTF-8 JSON envelope: {"ok": true, "result": ...} or '
    '{"ok": false, "error": {"code": ..., "message": ...}}'
)
_CRASH_FIX: Final = (
    "run the plugin under a debugger or AddressSanitizer with this request; in Rust, catch "
    "panics at the boundary"
)
_TIMEOUT_FIX: Final = (
    "answer promptly: calls hold a host thread; bound network waits and look for deadlocks"
)


def _fix(kind: str) -> str:
    """The fix for an answer that is not a well-formed envelope."""
    return {"crashed": _CRASH_FIX, "timeout": _TIMEOUT_FIX}.get(kind, _ENVELOPE_FIX)


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One line of the report."""

    name: str
    status: Status
    reason: str
    fix: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 4)}


@dataclass(frozen=True)
class Report:
    """Every check's result for one plugin file, and how long the run took."""

    path: Path
    isolated: bool
    results: tuple[CheckResult, ...]
    seconds: float

    @property
    def failed(self) -> bool:
        return any(r.status == "fail" for r in self.results)

    def counts(self) -> dict[Status, int]:
        counted = Counter(r.status for r in self.results)
        statuses: tuple[Status, ...] = ("pass", "warn", "fail", "skip")
        return {s: counted[s] for s in statuses}

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.results]

    def table(self) -> str:
        width = max(len("CHECK"), *(len(r.name) for r in self.results))
        lines = [f"{'STATUS':<6}  {'CHECK':<{width}}  REASON / FIX"]
        for r in self.results:
            lines.append(f"{r.status:<6}  {r.name:<{width}}  {r.reason}".rstrip())
            if r.fix and r.status != "pass":
                lines.append(f"{'':<6}  {'':<{width}}  fix: {r.fix}")
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        lines.append(
            f"{self.path}: {len(self.results)} checks, {counts} in {self.seconds:.2f} s "
            f"(a well-behaved plugin takes under {RUN_GOAL_SECONDS:g} s)"
        )
        if self.isolated:
            lines.append("isolated: the plugin ran in a worker process")
        else:
            lines.append(
                "in-process: a plugin that crashes takes this check down with it; "
                "use --isolated for untrusted binaries"
            )
        return "\n".join(lines)


# -- calling the plugin --------------------------------------------------------------------


class _Hung(Exception):
    """A call into the plugin did not return in time."""


def _bounded(fn: Callable[[], _T], timeout: float) -> _T:
    """fn() on a daemon thread: a plugin that hangs in-process can only be abandoned, not
    stopped, and a daemon thread does not keep the checker from exiting."""
    box: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=target, name="cliproxy-check", daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:
        raise _Hung
    done, value = box[0]
    if done:
        return cast(_T, value)
    raise value


@dataclass(frozen=True)
class _Answer:
    """What one call came back with, classified the way the checks judge it."""

    kind: Literal["ok", "error", "broken", "crashed", "timeout"]
    result: Any = None
    code: str = ""
    message: str = ""

    @property
    def well_formed(self) -> bool:
        return self.kind in ("ok", "error")

    def describe(self) -> str:
        if self.kind == "ok":
            return "answered ok"
        if self.kind == "error":
            return f"answered error {self.code}: {self.message}"
        if self.kind == "broken":
            return self.message
        if self.kind == "crashed":
            return f"crashed the plugin: {self.message}"
        return self.message


class _ResponseLog:
    """Every response body seen in the run: the UTF-8 JSON check reads it at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.bad = 0
        self.examples: list[str] = []

    def record(self, method: str, raw: bytes) -> str | None:
        problem = None
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = f"{method}: response is not UTF-8 ({exc.reason} at byte {exc.start})"
        else:
            try:
                orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                problem = f"{method}: response is not JSON ({exc})"
        with self._lock:
            self.count += 1
            if problem:
                self.bad += 1
                if len(self.examples) < _MAX_LISTED:
                    self.examples.append(problem)
        return problem


# -- the host side ---------------------------------------------------------------------------

_HTTP_TOKEN: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
_LOG_LEVELS: Final = frozenset(
    {"trace", "debug", "info", "warn", "warning", "error", "fatal", "panic", "critical"}
)
# host.http.do answers this whatever was asked: the check never touches the network.
_HTTP_ANSWER: Final = {
    "StatusCode": 200,
    "Headers": {"Content-Type": ["application/json"]},
    "Body": b64encode(b"{}"),
}


class _CheckHost:
    """The host side of the run: validates every host call and answers benign envelopes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._ids = itertools.count(1)
        self._issued: set[str] = set()
        self._reads: dict[str, int] = {}

    def _note(self, into: list[str], problem: str) -> None:
        with self._lock:
            if problem not in into:
                into.append(problem)

    def __call__(self, plugin_id: str, method: str, request: bytes) -> bytes:
        with self._lock:
            self.calls[method] += 1
        try:
            text = request.decode("utf-8")
        except UnicodeDecodeError:
            self._note(self.errors, f"{method}: request is not UTF-8")
            return InvalidRequest("request is not UTF-8").to_envelope()
        try:
            body = orjson.loads(text) if text.strip() else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            self._note(self.errors, f"{method}: request is not a JSON object")
            return InvalidRequest("request must be a JSON object").to_envelope()
        if method == "host.log":
            return self._log(body)
        if method in ("host.http.do", "host.http.do_stream"):
            return self._http(method, body)
        if method in ("host.http.stream_read", "host.http.stream_close"):
            return self._stream(method, body)
        self._note(self.warnings, f"called unknown host method {method!r}")
        return HostCallFailed(f"unknown host method {method!r}").to_envelope()

    def _log(self, body: dict[str, Any]) -> bytes:
        level = ci_get(body, "level")
        if not isinstance(level, str) or level.lower() not in _LOG_LEVELS:
            self._note(
                self.warnings,
                f"host.log: level {level!r} is not trace/debug/info/warn/error (logged at debug)",
            )
        message = ci_get(body, "message")
        if not isinstance(message, str) or not message:
            self._note(self.warnings, "host.log: message is missing or not a string")
        fields = ci_get(body, "fields")
        if fields is not None and not isinstance(fields, dict):
            self._note(self.warnings, "host.log: fields is not an object")
        return ok({})

    def _http(self, method: str, body: dict[str, Any]) -> bytes:
        nested = ci_get(body, "request")
        request = nested if isinstance(nested, dict) else body
        problems = _http_request_problems(request)
        if nested is not None and not isinstance(nested, dict):
            problems.insert(0, "field 'request' must be an object")
        if problems:
            for problem in problems:
                self._note(self.errors, f"{method}: {problem}")
            return InvalidRequest("; ".join(problems)).to_envelope()
        if method == "host.http.do":
            return ok(_HTTP_ANSWER)
        stream_id = f"check-{next(self._ids)}"
        with self._lock:
            self._issued.add(stream_id)
            self._reads[stream_id] = 0
        return ok(
            {
                "status_code": 200,
                "headers": {"Content-Type": ["application/json"]},
                "stream_id": stream_id,
            }
        )

    def _stream(self, method: str, body: dict[str, Any]) -> bytes:
        stream_id = ci_get(body, "stream_id")
        with self._lock:
            issued = isinstance(stream_id, str) and stream_id in self._issued
            reads = self._reads.get(stream_id) if issued else None
            if issued and (method == "host.http.stream_close" or reads):
                # Closed, or read to the end: forgotten, as the real host does.
                self._reads.pop(stream_id, None)
            elif reads == 0:
                self._reads[stream_id] = 1
        if not issued:
            self._note(
                self.errors,
                f"{method}: stream_id {stream_id!r} was never answered by host.http.do_stream",
            )
            return InvalidRequest(f"unknown stream_id {stream_id!r}").to_envelope()
        if method == "host.http.stream_close":
            return ok({})
        if reads is None:
            self._note(self.errors, f"{method}: stream {stream_id} read after it was done")
            return InvalidRequest(f"stream {stream_id} is finished").to_envelope()
        if reads == 0:
            return ok({"payload": b64encode(b"{}"), "error": "", "done": False})
        return ok({"payload": "", "error": "", "done": True})


def _http_request_problems(request: Mapping[str, Any]) -> list[str]:
    """What the real host.http.do would refuse in a request, without sending it anywhere."""
    problems = []
    method = ci_get(request, "method")
    if method not in (None, "") and (not isinstance(method, str) or not set(method) <= _HTTP_TOKEN):
        problems.append(f"method {method!r} is not an HTTP method")
    url = ci_get(request, "url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        problems.append(f"url {url!r} is not an absolute http or https URL")
    headers = ci_get(request, "headers")
    if headers is not None:
        if not isinstance(headers, dict):
            problems.append('headers must be an object such as {"Name": ["value"]}')
        else:
            for name, value in headers.items():
                values = [value] if isinstance(value, str) else value
                if value is not None and (
                    not isinstance(values, list) or not all(isinstance(v, str) for v in values)
                ):
                    problems.append(f"header {name!r} must be a list of strings")
    if _base64_problem(ci_get(request, "body")):
        problems.append("body is not a base64 string")
    return problems


def _base64_problem(value: Any) -> bool:
    if value is None or value == "":
        return False
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return True
    return False


# -- minimal valid requests (ABI.md sections 3 and 6) ------------------------------------------

_EMPTY_BODY: Final = b64encode(b"{}")
_EXECUTOR: Final = {
    "Model": "check-model",
    "Format": "chat-completions",
    "Stream": False,
    "Headers": {},
    "Query": {},
    "Payload": _EMPTY_BODY,
    "Metadata": {},
}
_TRANSFORM: Final = {
    "FromFormat": "chat-completions",
    "ToFormat": "chat-completions",
    "Model": "check-model",
    "Stream": False,
    "Body": _EMPTY_BODY,
}
_TRANSFORMS: Final = (
    "request.translate",
    "request.normalize",
    "request.intercept_before",
    "request.intercept_after",
    "response.translate",
    "response.normalize_before",
    "response.normalize_after",
    "response.intercept_after",
    "thinking.apply",
)
_REQUESTS: Final[dict[str, dict[str, Any]]] = {
    "executor.execute": _EXECUTOR,
    "executor.execute_stream": {**_EXECUTOR, "Stream": True},
    "executor.count_tokens": _EXECUTOR,
    "executor.http_request": {
        "Method": "GET",
        "URL": "https://check.invalid/",
        "Headers": {},
        "Body": "",
    },
    **dict.fromkeys(_TRANSFORMS, _TRANSFORM),
    "response.intercept_stream_chunk": {**_TRANSFORM, "Stream": True},
    "model.route": {"Model": "check-model"},
    "scheduler.pick": {"Model": "check-model"},
    "usage.handle": {"Model": "check-model"},
    "request.complete": {"Model": "check-model"},
    "auth.parse": {"StorageJSON": _EMPTY_BODY},
    "frontend_auth.authenticate": {"Headers": {}, "Query": {}},
    "command_line.execute": {"Args": []},
    "management.handle": {"Method": "GET", "Path": "/", "Headers": {}, "Query": {}, "Body": ""},
}
_BYTE_FIELDS: Final = ("Payload", "Body", "StorageJSON")

# The answer shape the host reads, named in the fix when a result does not have it.
_EXPECTED: Final[dict[str, str]] = {
    "executor.execute": '{"Payload": "<base64>", "Headers": {"Name": ["value"]}}',
    "executor.execute_stream": '{"headers": {...}, "chunks": [{"Payload": "<base64>"}]}',
    "management.register": '{"Routes": [{"Method", "Path", "Menu", "Description"}], '
    '"Resources": [{"Path", "Menu", "Description"}]}',
    "management.handle": '{"StatusCode": 200, "Headers": {...}, "Body": "<base64>"}',
    **dict.fromkeys(_TRANSFORMS, '{"Body": "<base64>"}'),
}


def _sample_value(config_field: ConfigField) -> Any:
    """A value of the declared type; URL-ish strings get a URL so that plugins using them
    reach host.http.do (answered locally) instead of refusing to work."""
    kind = config_field.type
    if kind == "enum":
        return config_field.enum_values[0] if config_field.enum_values else "check"
    if kind == "string":
        return "https://check.invalid/" if "url" in config_field.name.lower() else "check"
    return {"number": 1.5, "integer": 1, "boolean": True, "array": [], "object": {}}[kind]


def _config_yaml(settings: Mapping[str, Any]) -> bytes:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(dict(settings), out)
    return out.getvalue().encode("utf-8")


# -- the run -----------------------------------------------------------------------------------


def _plugin_id(path: Path) -> str:
    parsed = parse_name(path.name, LIBRARY_SUFFIX)
    if parsed:
        return parsed[0]
    stem = path.name.split(".")[0]
    return stem if is_valid_id(stem) else "check-plugin"


class _Run:
    """State shared by the checks of one run."""

    def __init__(self, path: Path, factory: BackendFactory, isolated: bool, cycles: int) -> None:
        # Absolute, because dlopen searches the library path for a bare file name.
        self.path = path.absolute()
        self.plugin_id = _plugin_id(path)
        self.factory = factory
        self.isolated = isolated
        # Room for an isolated backend's own timeout to fire first (see backend_factory).
        self.slack = _ISOLATED_SLACK if isolated else 0.0
        self.cycles = cycles
        self.host = _CheckHost()
        self.responses = _ResponseLog()
        self.backend: PluginBackend | None = None
        self.registration: Registration | None = None
        self.answers: dict[str, _Answer] = {}
        # Why the plugin can take no more calls (it crashed or hung), once it can't.
        self.stuck: str | None = None
        self._hung_inprocess = False

    def hung(self, reason: str) -> str:
        """Record that the plugin stopped answering; in-process it can only be abandoned."""
        self._hung_inprocess = not self.isolated
        self.stuck = reason
        return reason

    def open(self) -> PluginBackend:
        return _bounded(
            lambda: self.factory(self.plugin_id, self.path, self.host), LOAD_TIMEOUT + self.slack
        )

    def exchange(
        self, backend: PluginBackend, method: str, request: bytes, timeout: float = CALL_TIMEOUT
    ) -> _Answer:
        """One call; every way it can go wrong becomes an _Answer. `timeout` bounds it only
        in a backend that ends overruns itself (isolated); `call` bounds the rest."""
        try:
            raw = backend.call(method, request, timeout)
        except PluginResponseError as exc:
            return _Answer("broken", message=exc.message)
        except PluginError as exc:
            if isinstance(exc, PluginCrashed | PluginUnavailable):
                self.stuck = f"the plugin crashed in {method}"
                return _Answer("crashed", code=exc.code, message=exc.message)
            if isinstance(exc, PluginTimeout):
                self.stuck = f"{method} did not answer in time"
                return _Answer("timeout", code=exc.code, message=exc.message)
            if isinstance(exc, PluginCallFailed):
                return _Answer("broken", message=f"{exc.message} (no error envelope)")
            # A non-zero return with an error envelope is the plugin's error, as the ABI allows.
            return _Answer("error", code=exc.code, message=exc.message)
        problem = self.responses.record(method, raw)
        if problem:
            return _Answer("broken", message=problem)
        try:
            return _Answer("ok", result=decode(raw, plugin_id=self.plugin_id, method=method))
        except PluginResponseError as exc:
            return _Answer("broken", message=exc.message)
        except PluginError as exc:
            return _Answer("error", code=exc.code, message=exc.message)

    def call(
        self,
        method: str,
        request: Any,
        *,
        backend: PluginBackend | None = None,
        timeout: float | None = None,
    ) -> _Answer:
        timeout = CALL_TIMEOUT if timeout is None else timeout
        target = backend or self.backend
        assert target is not None, "a check that calls the plugin ran without a loaded plugin"
        data = request if isinstance(request, bytes) else orjson.dumps(request)
        try:
            return _bounded(
                lambda: self.exchange(target, method, data, timeout), timeout + self.slack
            )
        except _Hung:
            return _Answer(
                "timeout", message=self.hung(f"{method} did not answer within {timeout:g} s")
            )

    def request_for(self, method: str) -> dict[str, Any]:
        if method == "management.register":
            metadata = self.registration.metadata.to_json() if self.registration else {}
            return {
                "Plugin": metadata,
                "BasePath": "/v0/management",
                "ResourceBasePath": f"/v0/resource/plugins/{self.plugin_id}",
            }
        return dict(_REQUESTS.get(method, {}))

    def close(self, backend: PluginBackend) -> None:
        # Closing waits for calls in flight; after an in-process hang that would never end.
        if self._hung_inprocess:
            return
        try:
            _bounded(backend.close, LOAD_TIMEOUT)
        except _Hung:
            self.hung("closing did not finish (plugin.shutdown or shutdown() hangs)")

    def close_backend(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None:
            self.close(backend)


def _timed(results: list[CheckResult], started: float) -> list[CheckResult]:
    if len(results) == 1 and not results[0].seconds:
        return [replace(results[0], seconds=time.monotonic() - started)]
    return results


# -- the checks --------------------------------------------------------------------------------


def _check_file_name(run: _Run) -> list[CheckResult]:
    name = run.path.name
    if not name.endswith(LIBRARY_SUFFIX):
        return [
            CheckResult(
                "file name",
                "warn",
                f"the host only discovers *{LIBRARY_SUFFIX} files on this platform",
                f"install it as plugins/<os>/<arch>/{run.plugin_id}{LIBRARY_SUFFIX}",
            )
        ]
    parsed = parse_name(name, LIBRARY_SUFFIX)
    if parsed is None:
        return [
            CheckResult(
                "file name",
                "warn",
                f"{name!r} is not a valid plugin ID, so the host ignores the file",
                "rename it to match [A-Za-z0-9][A-Za-z0-9._-]{0,127}" + LIBRARY_SUFFIX,
            )
        ]
    plugin_id, version = parsed
    shown = f"plugin ID {plugin_id}" + (f", version {version}" if version else "")
    return [CheckResult("file name", "pass", f"the host would load it as {shown}")]


def _load_step(exc: PluginError) -> int:
    """Which load step a load error belongs to; NativePlugin and the isolated backend use the
    same codes, and the message tells apart the steps that share one."""
    if isinstance(exc, AbiVersionMismatch):
        return 3
    if isinstance(exc, PluginInitFailed):
        return 4 if "NULL" in exc.message else 2
    if type(exc) is PluginLoadError and "does not export" in exc.message:
        return 1
    if isinstance(exc, PluginTimeout):
        return 2
    return 0


def _check_load(run: _Run) -> list[CheckResult]:
    started = time.monotonic()
    where = "a worker process" if run.isolated else "this process"
    passes = (
        f"{run.path.name} loads in {where}",
        f"{INIT_SYMBOL} is exported",
        f"{INIT_SYMBOL} returned 0",
        f"the plugin speaks ABI version {ABI_VERSION}",
        "call and free_buffer are set",
    )

    def outcome(step: int, reason: str = "", fix: str = "") -> list[CheckResult]:
        """Steps before `step` passed, `step` failed, the rest were not reached."""
        results = [CheckResult(_LOAD_STEPS[i], "pass", passes[i]) for i in range(step)]
        if step < len(_LOAD_STEPS):
            fix = fix or _LOAD_FIXES[step]
            results.append(CheckResult(_LOAD_STEPS[step], "fail", reason, fix))
            results.extend(
                CheckResult(name, "skip", f"skipped: {_LOAD_STEPS[step]} failed")
                for name in _LOAD_STEPS[step + 1 :]
            )
        last = min(step, len(_LOAD_STEPS) - 1)
        results[last] = replace(results[last], seconds=time.monotonic() - started)
        return results

    if not run.path.is_file():
        missing = "does not exist" if not run.path.exists() else "is not a regular file"
        return outcome(0, f"{run.path} {missing}", "check the path; build the plugin first")
    try:
        run.backend = run.open()
    except _Hung:
        return outcome(2, run.hung(f"{INIT_SYMBOL} did not return within {LOAD_TIMEOUT:g} s"))
    except PluginError as exc:
        if isinstance(exc, PluginCrashed):
            return outcome(0, f"the worker crashed loading or initialising it: {exc.message}")
        return outcome(_load_step(exc), exc.message)
    except Exception as exc:  # a backend that fails some other way is still a failed load
        return outcome(0, f"{type(exc).__name__}: {exc}")
    return outcome(len(_LOAD_STEPS))


def _registration_warnings(raw: Mapping[str, Any], reg: Registration) -> list[str]:
    warnings = []
    repo = reg.metadata.github_repository
    if not repo.startswith(("https://", "http://")):
        warnings.append(f"GitHubRepository {repo!r} is not an http(s) URL")
    seen: set[str] = set()
    for f in reg.metadata.config_fields:
        if f.name in seen:
            warnings.append(f"ConfigField {f.name!r} is declared twice")
        seen.add(f.name)
        if f.name in BASE_CONFIG:
            warnings.append(f"ConfigField {f.name!r} is a host setting, not the plugin's")
        if f.type == "enum" and not f.enum_values:
            warnings.append(f"ConfigField {f.name!r} is an enum without EnumValues")
        if f.type != "enum" and f.enum_values:
            warnings.append(f"ConfigField {f.name!r} has EnumValues but type {f.type}")
    capabilities = ci_get(raw, "capabilities")
    known = set(CAPABILITY_METHODS) | QUALIFIER_FLAGS
    if isinstance(capabilities, Mapping):
        for flag, value in capabilities.items():
            lowered = str(flag).casefold()
            if value is True and lowered not in known and not lowered.startswith("executor_"):
                warnings.append(f"unknown capability flag {flag!r} (ignored)")
    scope = reg.capabilities.get("executor_model_scope")
    if "executor" in reg.flags and scope not in (None, "", "both", "static", "oauth"):
        warnings.append(f"executor_model_scope {scope!r} is not both, static or oauth")
    return warnings


_REGISTRATION_FIX: Final = (
    'answer {"schema_version": 1, "metadata": {"Name", "Version", "Author", '
    '"GitHubRepository", "ConfigFields": [...]}, "capabilities": {"<flag>": true}}'
)


def _lifecycle(run: _Run, method: str, settings: Mapping[str, Any]) -> Registration | str:
    """The registration a lifecycle call answers, or why it is not one."""
    answer = run.call(method, lifecycle_request(_config_yaml(settings)), timeout=LOAD_TIMEOUT)
    if not answer.well_formed:
        return answer.describe()
    if answer.kind == "error":
        return f"answered error {answer.code}: {answer.message}"
    try:
        return parse_registration(answer.result, run.plugin_id)
    except PluginLoadError as exc:
        return exc.message


def _check_registration(run: _Run) -> list[CheckResult]:
    answer = run.call(
        Method.REGISTER, lifecycle_request(_config_yaml(BASE_CONFIG)), timeout=LOAD_TIMEOUT
    )
    name = "registration"
    if not answer.well_formed:
        reason = f"plugin.register {answer.describe()}"
        return [CheckResult(name, "fail", reason, _fix(answer.kind))]
    if answer.kind == "error":
        return [
            CheckResult(
                name,
                "fail",
                f"plugin.register answered error {answer.code}: {answer.message}",
                "register with the default config (enabled: true, priority: 0): a plugin "
                "that needs settings should load and say what is missing when used",
            )
        ]
    try:
        reg = parse_registration(answer.result, run.plugin_id)
    except PluginLoadError as exc:
        return [CheckResult(name, "fail", exc.message, _REGISTRATION_FIX)]
    run.registration = reg
    meta = reg.metadata
    summary = (
        f"{meta.name} {meta.version} by {meta.author}, schema {reg.schema_version}; "
        f"capabilities: {', '.join(f for f in CAPABILITY_METHODS if f in reg.flags)}"
    )
    warnings = _registration_warnings(answer.result, reg)
    if warnings:
        return [CheckResult(name, "warn", "; ".join(warnings), _REGISTRATION_FIX)]
    return [CheckResult(name, "pass", summary)]


def _check_reconfigure(run: _Run) -> list[CheckResult]:
    assert run.registration is not None
    fields = [f for f in run.registration.metadata.config_fields if f.name not in BASE_CONFIG]
    samples = {f.name: _sample_value(f) for f in fields}
    outcome = _lifecycle(run, Method.RECONFIGURE, {**BASE_CONFIG, **samples})
    if isinstance(outcome, Registration):
        shown = ", ".join(f"{k}: {orjson.dumps(v).decode()}" for k, v in samples.items())
        return [
            CheckResult(
                "reconfigure",
                "pass",
                f"answers a valid registration to a new config ({shown or 'no ConfigFields'})",
            )
        ]
    if run.stuck or not samples:
        return [CheckResult("reconfigure", "fail", outcome, _REGISTRATION_FIX)]
    # The samples may be values the plugin cannot use; the base config tells whether
    # reconfigure works at all.
    fallback = _lifecycle(run, Method.RECONFIGURE, BASE_CONFIG)
    if isinstance(fallback, Registration):
        return [
            CheckResult(
                "reconfigure",
                "warn",
                f"refuses values of its declared ConfigField types {samples!r}: {outcome}",
                "accept every value of a declared type, or declare a narrower one (an enum)",
            )
        ]
    return [CheckResult("reconfigure", "fail", fallback, _REGISTRATION_FIX)]


def _result_problems(method: str, result: Any) -> list[str]:
    if not isinstance(result, dict):
        return [f"the result is {type(result).__name__}, not a JSON object"]
    problems = [
        f"{key} is not a base64 string"
        for key in _BYTE_FIELDS
        if ci_get(result, key) is not None and _base64_problem(ci_get(result, key))
    ]
    if method.endswith(".identifier"):
        ident = ci_get(result, "identifier")
        if not isinstance(ident, str) or not ident:
            problems.append("identifier is missing or empty")
    elif method == "executor.execute" and ci_get(result, "Payload") is None:
        problems.append("Payload is missing")
    elif method == "executor.execute_stream":
        chunks = ci_get(result, "chunks")
        if not isinstance(chunks, list) or not all(isinstance(c, dict) for c in chunks):
            problems.append("chunks is not a list of objects")
        elif any(_base64_problem(ci_get(c, "Payload")) for c in chunks):
            problems.append("a chunk's Payload is not a base64 string")
    elif method == "management.register":
        problems.extend(_route_problems(result))
    elif method == "management.handle":
        status = ci_get(result, "StatusCode")
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            problems.append(f"StatusCode {status!r} is not an HTTP status")
    return problems


def _route_problems(result: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, needs_method in (("Routes", True), ("Resources", False)):
        entries = ci_get(result, key)
        if entries is None:
            continue
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            problems.append(f"{key} is not a list of objects")
            continue
        for entry in entries:
            path = ci_get(entry, "Path")
            if not isinstance(path, str) or not path.startswith("/"):
                problems.append(f"{key}: Path {path!r} does not start with /")
            elif any(bad in path for bad in (":", "*", "{", "..")):
                problems.append(f"{key}: Path {path!r} has :, *, {{ or .. (rejected)")
            if needs_method and not isinstance(ci_get(entry, "Method"), str):
                problems.append(f"{key}: a route has no Method")
    return problems


def _judge_method(flag: str, method: str, answer: _Answer, seconds: float) -> CheckResult:
    name = f"method {method}"
    if answer.kind == "ok":
        problems = _result_problems(method, answer.result)
        if problems:
            expected = _EXPECTED.get(method, "a JSON object; byte fields as base64 strings")
            return CheckResult(name, "warn", "; ".join(problems), f"answer {expected}", seconds)
        shown = ""
        if method.endswith(".identifier"):
            shown = f" (identifier {ci_get(answer.result, 'identifier')!r})"
        return CheckResult(name, "pass", f"answers ok{shown}", seconds=seconds)
    if answer.kind == "error":
        if answer.code in DECLINE_CODES:
            return CheckResult(
                name,
                "warn",
                f"declares {flag} but {method} answers {answer.code}: {answer.message}",
                f"implement {method}, or stop declaring {flag}",
                seconds,
            )
        return CheckResult(
            name,
            "warn",
            f"answers error {answer.code} to a minimal valid request: {answer.message}",
            "a minimal request should succeed; if it cannot without settings, the message "
            "should say which to set",
            seconds,
        )
    return CheckResult(name, "fail", answer.describe(), _fix(answer.kind), seconds)


def _check_methods(run: _Run) -> list[CheckResult]:
    assert run.registration is not None
    results = []
    for flag, methods in CAPABILITY_METHODS.items():
        if flag not in run.registration.flags:
            continue
        for method in methods:
            if run.stuck:
                results.append(CheckResult(f"method {method}", "skip", f"skipped: {run.stuck}"))
                continue
            started = time.monotonic()
            answer = run.call(method, run.request_for(method))
            run.answers[method] = answer
            results.append(_judge_method(flag, method, answer, time.monotonic() - started))
    return results


def _check_unknown_method(run: _Run) -> list[CheckResult]:
    name = "unknown method"
    answer = run.call(UNKNOWN_METHOD, b"{}")
    run.answers.setdefault(UNKNOWN_METHOD, answer)
    if answer.kind == "error" and answer.code == "unknown_method":
        return [CheckResult(name, "pass", f"{UNKNOWN_METHOD} answers unknown_method")]
    fix = (
        'answer {"ok": false, "error": {"code": "unknown_method", ...}} to every method '
        "you do not implement"
    )
    if answer.kind == "error":
        reason = f"{UNKNOWN_METHOD} answers {answer.code}, not unknown_method"
        return [CheckResult(name, "warn", reason, fix)]
    if answer.kind == "ok":
        reason = f"{UNKNOWN_METHOD} answers ok to a method it cannot know"
        return [CheckResult(name, "fail", reason, fix)]
    return [CheckResult(name, "fail", f"{UNKNOWN_METHOD} {answer.describe()}", fix)]


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _compare(baseline: _Answer, answer: _Answer) -> Literal["same", "varies", "differs"]:
    if (answer.kind, answer.code) != (baseline.kind, baseline.code):
        return "differs"
    if answer.kind == "ok" and answer.result != baseline.result:
        return "varies" if _shape(answer.result) == _shape(baseline.result) else "differs"
    return "same"


def _check_concurrency(run: _Run) -> list[CheckResult]:
    name = "concurrency"
    backend = run.backend
    assert backend is not None
    targets = [(m, a) for m, a in run.answers.items() if a.well_formed]
    if not targets:
        return [CheckResult(name, "skip", "no method answered a well-formed envelope to repeat")]
    requests = {m: orjson.dumps(run.request_for(m)) for m, _ in targets}
    lock = threading.Lock()
    calls = Counter[str]()
    varies: list[str] = []
    differs: list[str] = []
    deadline = time.monotonic() + CONCURRENCY_SECONDS

    def worker(offset: int) -> None:
        for i in itertools.count(offset):
            if time.monotonic() >= deadline or run.stuck:
                return
            method, baseline = targets[i % len(targets)]
            answer = run.exchange(backend, method, requests[method])
            verdict = _compare(baseline, answer)
            with lock:
                calls[verdict] += 1
                if verdict == "differs" and len(differs) < _MAX_LISTED:
                    differs.append(f"{method} {answer.describe()} instead of {baseline.describe()}")
                elif verdict == "varies" and method not in varies:
                    varies.append(method)
            if not answer.well_formed:
                return

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"cliproxy-check-{i}", daemon=True)
        for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline + CALL_TIMEOUT - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        reason = run.hung(
            f"a call did not return within {CALL_TIMEOUT:g} s under {THREADS} threads"
        )
        return [CheckResult(name, "fail", f"{reason} (a deadlock?)", _TIMEOUT_FIX)]
    total = sum(calls.values())
    rate = f"{total} calls from {THREADS} threads in {CONCURRENCY_SECONDS:g} s"
    if differs:
        return [
            CheckResult(
                name,
                "fail",
                f"{calls['differs']} of {total} answers changed under load: " + "; ".join(differs),
                "calls come from many threads at once: guard shared state with a lock or "
                "atomics, and keep per-call state on the stack",
            )
        ]
    if varies:
        return [
            CheckResult(
                name,
                "warn",
                f"{rate}; answers of {', '.join(varies)} vary between calls (same shape)",
                "fine if intended (IDs, timestamps); otherwise look for unguarded shared state",
            )
        ]
    return [CheckResult(name, "pass", f"{rate}, all consistent")]


def _large_request(run: _Run) -> tuple[str, bytes]:
    """The first method that answered ok and takes a byte field, with about 1 MiB in it."""
    for method, answer in run.answers.items():
        base = run.request_for(method)
        key = next((k for k in _BYTE_FIELDS if k in base), None)
        if key is None or answer.kind != "ok":
            continue
        room = LARGE_REQUEST_BYTES - len(orjson.dumps({**base, key: ""}))
        # base64 turns every 3 bytes into 4; the body is valid JSON in case the plugin parses it.
        filler = b"a" * (-(-room // 4) * 3 - len(b'{"check":""}'))
        return method, orjson.dumps({**base, key: b64encode(b'{"check":"' + filler + b'"}')})
    return UNKNOWN_METHOD, orjson.dumps({"Padding": "a" * LARGE_REQUEST_BYTES})


def _check_large_request(run: _Run) -> list[CheckResult]:
    name = "1 MiB request"
    method, request = _large_request(run)
    started = time.monotonic()
    answer = run.call(method, request)
    took = f"{(time.monotonic() - started) * 1000:.0f} ms"
    size = f"{len(request) / (1 << 20):.2f} MiB"
    if answer.kind == "ok" or (answer.kind == "error" and method == UNKNOWN_METHOD):
        return [CheckResult(name, "pass", f"{method} handled a {size} request in {took}")]
    if answer.kind == "error":
        return [
            CheckResult(
                name,
                "warn",
                f"{method} answers error {answer.code} to a {size} request: {answer.message}",
                "accept large requests: bodies of several MiB are normal in LLM traffic",
            )
        ]
    reason = f"{method} with a {size} request: {answer.describe()}"
    return [CheckResult(name, "fail", reason, _fix(answer.kind))]


def _count_entries(directory: str) -> int | None:
    try:
        return len(os.listdir(directory))
    except OSError:
        return None


def _process_resources() -> tuple[int | None, int | None]:
    """Open file descriptors and OS threads (plugin-made ones too), where the OS can tell."""
    fds = _count_entries("/proc/self/fd")
    return (fds if fds is not None else _count_entries("/dev/fd")), _count_entries(
        "/proc/self/task"
    )


def _check_cycles(run: _Run) -> list[CheckResult]:
    name = "load/unload cycles"
    # The cycles need the library to themselves: a second instance of the same file
    # shares its globals with the first.
    run.close_backend()
    if run.stuck:
        return [CheckResult(name, "fail", run.stuck, _TIMEOUT_FIX)]
    register = lifecycle_request(_config_yaml(BASE_CONFIG))
    fds_before, threads_before = _process_resources()
    started = time.monotonic()
    for cycle in range(1, run.cycles + 2):
        # The extra last round is the health probe: after every cycle, the plugin must
        # still load, register and answer.
        where = f"cycle {cycle}" if cycle <= run.cycles else f"after {run.cycles} cycles"
        try:
            backend = run.open()
        except _Hung:
            reason = run.hung(f"{where}: {INIT_SYMBOL} did not return")
            return [CheckResult(name, "fail", reason, _TIMEOUT_FIX)]
        except PluginError as exc:
            return [
                CheckResult(
                    name,
                    "fail",
                    f"{where}: the plugin no longer loads: {exc.message}",
                    "init must work again after shutdown: reset globals in init or shutdown",
                )
            ]
        probes = [(Method.REGISTER.value, register)]
        if cycle > run.cycles:
            probes.append((UNKNOWN_METHOD, b"{}"))
        for method, request in probes:
            answer = run.call(method, request, backend=backend, timeout=LOAD_TIMEOUT)
            if not answer.well_formed:
                run.close(backend)
                reason = f"{where}: {method} {answer.describe()}"
                return [CheckResult(name, "fail", reason, _fix(answer.kind))]
        run.close(backend)
        if run.stuck:
            return [CheckResult(name, "fail", f"{where}: {run.stuck}", _TIMEOUT_FIX)]
    seconds = time.monotonic() - started
    fds_after, threads_after = _process_resources()
    leaks = []
    if fds_before is not None and fds_after is not None and fds_after - fds_before > _FD_SLACK:
        leaks.append(f"{fds_after - fds_before} more open file descriptors")
    if (
        threads_before is not None
        and threads_after is not None
        and threads_after - threads_before > _THREAD_SLACK
    ):
        leaks.append(f"{threads_after - threads_before} more threads")
    done = f"{run.cycles} cycles in {seconds:.2f} s"
    if run.isolated:
        done = f"{run.cycles} cycles, each in a new worker process, in {seconds:.2f} s"
    if leaks:
        return [
            CheckResult(
                name,
                "warn",
                f"{done}, but the host now has {' and '.join(leaks)}",
                "shutdown must stop the threads and close the files that init and calls open",
            )
        ]
    return [CheckResult(name, "pass", f"{done}; it still loads and answers, nothing leaked")]


def _check_utf8_json(run: _Run) -> list[CheckResult]:
    log = run.responses
    if log.bad:
        return [
            CheckResult(
                "UTF-8 JSON",
                "fail",
                f"{log.bad} of {log.count} responses: " + "; ".join(log.examples),
                "encode responses as UTF-8 JSON; send bytes as base64 strings",
            )
        ]
    if not log.count:
        return [CheckResult("UTF-8 JSON", "skip", "the plugin sent no response to check")]
    return [CheckResult("UTF-8 JSON", "pass", f"all {log.count} responses were UTF-8 JSON")]


def _check_host_calls(run: _Run) -> list[CheckResult]:
    name = "host callbacks"
    host = run.host
    if not host.calls:
        return [CheckResult(name, "skip", "the plugin made no host calls during the run")]
    made = ", ".join(f"{m} x{n}" for m, n in sorted(host.calls.items()))
    fix = (
        'send JSON objects: host.log {"level": "info", "message": "..."}, host.http.do '
        '{"method", "url", "headers": {"Name": ["value"]}, "body": "<base64>"}'
    )
    if host.errors:
        return [CheckResult(name, "fail", "; ".join(host.errors[:_MAX_LISTED]), fix)]
    if host.warnings:
        return [CheckResult(name, "warn", "; ".join(host.warnings[:_MAX_LISTED]), fix)]
    return [
        CheckResult(name, "pass", f"{made}, all well-formed (answered locally, no network traffic)")
    ]


@dataclass(frozen=True)
class _Check:
    key: str
    title: str  # the line shown when the whole check is skipped
    run: Callable[[_Run], list[CheckResult]]
    needs: tuple[str, ...] = ()
    calls_plugin: bool = True


# In order. A check is skipped when a check it needs failed or was skipped, or when the
# plugin crashed or hung before it (then only the summaries of what was seen still run).
CHECKS: Final[tuple[_Check, ...]] = (
    _Check("file name", "file name", _check_file_name, calls_plugin=False),
    _Check("load", "loads", _check_load),
    _Check("registration", "registration", _check_registration, ("load",)),
    _Check("reconfigure", "reconfigure", _check_reconfigure, ("registration",)),
    _Check("methods", "capability methods", _check_methods, ("registration",)),
    _Check("unknown method", "unknown method", _check_unknown_method, ("load",)),
    _Check("concurrency", "concurrency", _check_concurrency, ("unknown method",)),
    _Check("large request", "1 MiB request", _check_large_request, ("load",)),
    _Check("cycles", "load/unload cycles", _check_cycles, ("registration",)),
    _Check("utf-8", "UTF-8 JSON", _check_utf8_json, ("load",), calls_plugin=False),
    _Check("host calls", "host callbacks", _check_host_calls, ("load",), calls_plugin=False),
)


def backend_factory(isolated: bool) -> BackendFactory:
    """NativePlugin, or the worker-process backend; ImportError when this build has none."""
    if not isolated:
        return NativePlugin
    # Imported by name, lazily: check works in builds without the isolated backend.
    module = importlib.import_module("..backends.isolated.client", __package__)
    plugin_class = module.IsolatedPlugin
    # The backend's own timeouts (each call's, see _Run.exchange) fire before the
    # checker's, so a worker that hangs is killed and reported rather than abandoned.
    limits = module.IsolationLimits(start_timeout_s=LOAD_TIMEOUT)

    def isolated_plugin(plugin_id: str, path: Path, handler: HostHandler) -> PluginBackend:
        return cast(PluginBackend, plugin_class(plugin_id, path, handler, limits))

    return isolated_plugin


def run_checks(path: Path, *, isolated: bool = False, cycles: int | None = None) -> Report:
    """Run every check against the plugin file at `path`."""
    started = time.monotonic()
    try:
        factory = backend_factory(isolated)
    except ImportError:
        result = CheckResult(
            "isolated mode",
            "fail",
            "isolated mode is not available in this build",
            "run without --isolated (only for plugins you trust), or upgrade cliproxy-host",
        )
        return Report(path, isolated, (result,), time.monotonic() - started)
    if cycles is None:
        cycles = ISOLATED_CYCLES if isolated else CYCLES
    run = _Run(path, factory, isolated, cycles)
    results: list[CheckResult] = []
    blocked: dict[str, str] = {}
    try:
        for check in CHECKS:
            reason = next((blocked[k] for k in check.needs if k in blocked), None)
            if reason is None and check.calls_plugin and run.stuck:
                reason = run.stuck
            if reason is not None:
                results.append(CheckResult(check.title, "skip", f"skipped: {reason}"))
                blocked[check.key] = reason
                continue
            check_started = time.monotonic()
            produced = _timed(check.run(run), check_started)
            results.extend(produced)
            failed = next((r for r in produced if r.status == "fail"), None)
            if failed is not None:
                blocked[check.key] = f"{failed.name} failed"
            elif all(r.status == "skip" for r in produced):
                blocked[check.key] = f"{check.title} was skipped"
    finally:
        run.close_backend()
    return Report(path, isolated, tuple(results), time.monotonic() - started)
