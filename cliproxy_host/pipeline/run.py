"""Pipeline: one model request through router, interceptors, executor, translators, observers.

The order is the Go host's (docs/PIPELINE.md): model.route, request.intercept_before,
the executor chosen by model and formats, request.intercept_after, request translation
(request.normalize, then request.translate) into the executor's input format, the
executor, response translation (response.normalize_before, response.translate,
response.normalize_after), then usage.handle, response.intercept_after and
request.complete; a stream runs response.intercept_stream_chunk per chunk and ends with
request.complete, then usage.handle.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from ..envelope import b64decode, b64encode, ci_get
from ..errors import NoHandler, PluginError, RequestRejected, UnsupportedFormat
from . import catalog as catalog_mod
from . import formats
from .models import (
    Headers,
    ModelChunk,
    ModelEntry,
    ModelRequest,
    ModelResponse,
    headers_json,
    headers_of,
    new_response,
)
from .source import Participant, PluginSource, PluginStream
from .stages import Stages, merge_headers
from .syncstream import SyncStream

log = logging.getLogger(__name__)

# Schema 3: payload chunks of a stream omit OriginalRequest and RequestBody.
SCHEMA_CHUNKS_OMIT_BODIES: Final = 3
HEADER_INIT_INDEX: Final = -1
HISTORY_CHUNKS: Final = 64
HISTORY_BYTES: Final = 1 << 20

_ids = itertools.count(1)

# Stages a nested run (ModelRequest.caller) does not show to the plugin that asked for it.
_SKIPPED_FOR_CALLER: Final = frozenset(
    {
        "model.route",
        "request.intercept_before",
        "request.intercept_after",
        "response.intercept_after",
        "response.intercept_stream_chunk",
        "request.complete",
    }
)
# Every stage a run reads participants of (its plan holds them all).
_STAGES: Final = (
    "model.route",
    "request.intercept_before",
    "executor.execute",
    "request.intercept_after",
    "request.normalize",
    "request.translate",
    "response.normalize_before",
    "response.translate",
    "response.normalize_after",
    "usage.handle",
    "response.intercept_after",
    "response.intercept_stream_chunk",
    "request.complete",
)
# Metadata of a nested run, as the Go host marks it.
NESTED_SOURCE: Final = {"source": "plugin_host_model_callback"}


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


_EMPTY_B64: Final = (b"", "")


class _Memo:
    """Bodies in base64, each encoded once while the stages pass it along unchanged.

    Keyed by identity: bytes are immutable, and a stage that changes a body hands over
    a new object, so only a changed body is encoded again. Two entries: a run carries
    its original request and the current body (they differ once something rewrote it).
    """

    __slots__ = ("_a", "_b")

    def __init__(self) -> None:
        self._a: tuple[bytes, str] = _EMPTY_B64
        self._b: tuple[bytes, str] = _EMPTY_B64

    def b64(self, data: bytes) -> str:
        a = self._a
        if a[0] is data:
            return a[1]
        b = self._b
        if b[0] is data:
            return b[1]
        text = b64encode(data)
        self._a, self._b = (data, text), a
        return text


class _Run(_Memo):
    """The state of one request as it moves through the stages.

    It is also the base64 memo of its request bodies (original and current).
    """

    __slots__ = (
        "body",
        "executor",
        "headers",
        "input_format",
        "metadata",
        "original",
        "output_format",
        "plan",
        "req",
        "request_id",
        "response_format",
        "source_format",
        "stages",
        "started",
        "started_at",
        "stream",
        "view",
    )

    def __init__(
        self, req: ModelRequest, stages: Stages, view: _View, plan: Plan, stream: bool
    ) -> None:
        self.req = req
        self.stream = stream
        self.stages = stages
        # One set of loaded plugins for the whole run: every stage reads this view and
        # this plan (the participants of each stage).
        self.view = view
        self.plan = plan
        self.request_id = f"req-{next(_ids)}"
        self.metadata: dict[str, Any] = (
            {**req.metadata, **NESTED_SOURCE} if req.caller else dict(req.metadata)
        )
        self.body = req.body
        self.original = req.body
        # Never changed in place (merge_headers answers a new dict), so not copied.
        self.headers: Mapping[str, tuple[str, ...]] = req.headers
        self.executor: Participant | None = None
        self.input_format = ""
        self.output_format = ""
        self.source_format = req.source_format
        self.response_format = req.response_format
        self.started = time.monotonic()
        self.started_at = time.time()
        self._a = self._b = _EMPTY_B64


# Stage method -> its participants in dispatch order, for one caller.
Plan = dict[str, tuple[Participant, ...]]


class _View:
    """What the pipeline derives from one set of loaded plugins; replaced when it changes."""

    __slots__ = ("candidates", "catalog", "chosen", "fits", "plans", "revision")

    def __init__(self, revision: object) -> None:
        self.revision = revision
        self.catalog: catalog_mod.Catalog | None = None
        # caller ("" for a client's run) -> the plan of its runs
        self.plans: dict[str, Plan] = {}
        # (model, source format, response format, executors allowed) -> the executor and
        # its (input, output)
        # formats, when no router decides
        self.chosen: dict[
            tuple[str, str, str, frozenset[str] | None], tuple[Participant, str, str]
        ] = {}
        # (executor, source format, response format) -> (input, output) or the refusal
        self.fits: dict[tuple[str, str, str], tuple[str, str] | UnsupportedFormat] = {}
        # model -> the executors that may serve it, in the order they are tried
        self.candidates: dict[str, tuple[Participant, ...]] = {}


class Pipeline:
    """Runs model requests over a PluginSource; cheap to build, safe to share between threads."""

    def __init__(self, source: PluginSource) -> None:
        self._source = source
        self._view_cache = _View(object())

    def _view(self) -> _View:
        revision = self._source.revision()
        view = self._view_cache
        if view.revision is not revision:
            # Concurrent callers may each build one; the last one kept is as good.
            view = self._view_cache = _View(revision)
        return view

    def _start(self, request: ModelRequest | Mapping[str, Any], stream: bool) -> _Run:
        req = ModelRequest.of(request)
        view = self._view()
        plan = view.plans.get(req.caller)
        if plan is None:
            plan = view.plans[req.caller] = self._plan(req.caller)
        return _Run(req, Stages(self._source), view, plan, stream)

    def _plan(self, caller: str) -> Plan:
        """Every stage's participants, less the calling plugin in a nested run."""
        plan: Plan = {}
        for method in _STAGES:
            found = tuple(self._source.participants(method))
            if caller and method in _SKIPPED_FOR_CALLER:
                found = tuple(p for p in found if p.name != caller)
            plan[method] = found
        return plan

    # -- models ------------------------------------------------------------------------

    def models(self, auths: tuple[Mapping[str, Any], ...] = ()) -> list[ModelEntry]:
        """Every model the plugins offer (model.static, model.register, model.for_auth)."""
        if auths:
            return list(catalog_mod.build(self._source, auths).entries)
        return list(self._current_catalog().entries)

    def _current_catalog(self) -> catalog_mod.Catalog:
        return self._catalog_of(self._view())

    def _catalog_of(self, view: _View) -> catalog_mod.Catalog:
        if view.catalog is None:
            view.catalog = catalog_mod.build(self._source)
        return view.catalog

    # -- non-streaming -----------------------------------------------------------------

    def execute(self, request: ModelRequest | Mapping[str, Any]) -> ModelResponse:
        """Run a request to its end; raises the executor's (or a rejecting stage's) error."""
        run = self._start(request, False)
        self._prepare(run, stream=False)
        executor = run.executor
        assert executor is not None
        try:
            answer = run.stages.call(
                executor, "executor.execute", self._executor_request(run, False)
            )
        except PluginError as exc:
            self._fail(run, exc, stream=False)
            raise
        raw_payload, raw_headers = _payload_and_headers(answer)
        body = b64decode(raw_payload or "", "Payload")
        if run.output_format != run.response_format:
            body = self._translate_response(run, body, stream=False)
        plan = run.plan
        if plan["usage.handle"]:
            self._usage(run, failed=None)
        out_headers: Headers = headers_of(raw_headers)
        if plan["response.intercept_after"]:
            body, out_headers = self._intercept_response(run, body, out_headers)
        if plan["request.complete"]:
            self._complete(run, "succeeded", 200, "")
        return new_response(
            body,
            out_headers,
            executor.name,
            run.request_id,
            status_code=200,
            problems=tuple(run.stages.problems),
        )

    # -- streaming ---------------------------------------------------------------------

    def execute_stream(
        self, request: ModelRequest | Mapping[str, Any]
    ) -> Generator[ModelChunk, None, None]:
        """The chunks of a streamed run, as the client gets them.

        Nothing runs until the first next(): then the request is routed, intercepted and
        sent to the executor (their errors are raised there). Closing the iterator early
        (or leaving a for loop) closes the executor's stream and reports the request as
        canceled; an iterator closed before its first next() has started nothing.
        """
        run = self._start(request, True)
        self._prepare(run, stream=True)
        try:
            stream = self._open_stream(run)
        except PluginError as exc:
            self._fail(run, exc, stream=True)
            raise
        yield from self._chunks(run, stream)

    def _chunks(self, run: _Run, stream: PluginStream) -> Generator[ModelChunk, None, None]:
        interceptors = run.plan["response.intercept_stream_chunk"]
        headers: Headers = headers_of(stream.headers)
        if interceptors:
            headers, _, _ = self._intercept_chunk(
                run, interceptors, headers, b"", index=HEADER_INIT_INDEX, history=[]
            )
        outcome, status, error = "canceled", 0, "the consumer stopped reading"
        history: list[bytes] = []
        index = 0
        delivered = 0
        try:
            with stream:
                for chunk in stream:
                    if chunk.error:
                        outcome, status, error = "failed", 502, chunk.error
                        raise PluginError(
                            chunk.error,
                            plugin_id=run.executor.name if run.executor else None,
                            method="executor.execute_stream",
                        )
                    if not chunk.payload:
                        continue
                    payload = self._translate_response(run, chunk.payload, stream=True)
                    if not payload:
                        continue
                    if interceptors:
                        headers, payload, drop = self._intercept_chunk(
                            run, interceptors, headers, payload, index=index, history=history
                        )
                        index += 1
                        if drop:
                            continue
                        history.append(payload)
                        _trim(history)
                    else:
                        index += 1
                    yield ModelChunk(payload, delivered)
                    delivered += 1
            outcome, status, error = "succeeded", 200, ""
        except PluginError as exc:
            if outcome != "failed":
                outcome, status, error = "failed", exc.http_status, exc.message
            raise
        finally:
            self._complete(run, outcome, status, error)
            self._usage(run, failed=None if outcome == "succeeded" else error)

    async def aexecute_stream(
        self, request: ModelRequest | Mapping[str, Any]
    ) -> AsyncIterator[ModelChunk]:
        """execute_stream for asyncio: plugin calls run on worker threads, never on the loop."""
        chunks = await asyncio.to_thread(self.execute_stream, request)
        end = object()
        try:
            while True:
                item = await asyncio.to_thread(next, chunks, end)
                if item is end:
                    return
                assert isinstance(item, ModelChunk)
                yield item
        finally:
            await asyncio.to_thread(chunks.close)

    # -- the stages ----------------------------------------------------------------------

    def _prepare(self, run: _Run, *, stream: bool) -> None:
        """Route, choose the executor, intercept and translate: everything before the call."""
        # Each stage is called only when it has participants (the common case has few).
        plan = run.plan
        routed = self._route(run, stream) if plan["model.route"] else ""
        if plan["request.intercept_before"]:
            self._intercept_request(run, "request.intercept_before", "")
        self._choose_executor(run, routed)
        if plan["request.intercept_after"]:
            self._intercept_request(run, "request.intercept_after", run.input_format)
        if run.source_format != run.input_format:
            self._translate_request(run, stream)

    def _route(self, run: _Run, stream: bool) -> str:
        routers = run.plan["model.route"]
        if not routers:
            return ""
        req = run.req
        base = {
            "SourceFormat": run.source_format,
            "RequestedModel": req.model,
            "Stream": stream,
            "Headers": headers_json(req.headers),
            "Query": headers_json(req.query),
            "Body": run.b64(req.body),
            "Metadata": run.metadata,
            "AvailableProviders": [],
        }
        for p in routers:
            answer = run.stages.attempt(p, "model.route", {**base, "PluginID": p.name})
            if not isinstance(answer, Mapping) or ci_get(answer, "handled") is not True:
                continue
            kind = str(ci_get(answer, "targetkind", "") or "")
            target = p.name if kind == "self" else str(ci_get(answer, "target", "") or "").strip()
            if kind not in ("self", "executor") or not target:
                log.warning(
                    "model router %s answered target %r of kind %r, which this host cannot "
                    "serve (no built-in providers); trying the next router",
                    p.name,
                    target,
                    kind,
                )
                continue
            executor = self._executor_named(run, target)
            if executor is None or self._fit(run, executor) is None:
                log.warning(
                    "model router %s chose executor %s, which is not loaded or does not fit "
                    "the request's formats; trying the next router",
                    p.name,
                    target,
                )
                continue
            return target
        return ""

    def _executor_named(self, run: _Run, name: str) -> Participant | None:
        for p in run.plan["executor.execute"]:
            if p.name == name:
                return p
        return None

    def _can_translate(self, method: str) -> formats.CanTranslate:
        translators = bool(self._source.participants(method))
        return lambda a, b: a == b or translators

    def _fit(self, run: _Run, p: Participant) -> tuple[str, str] | None:
        try:
            return self._formats(run, p)
        except UnsupportedFormat:
            return None

    def _formats(self, run: _Run, p: Participant) -> tuple[str, str]:
        if p.native is not None:
            return run.source_format, run.response_format
        fits = run.view.fits
        key = (p.name, run.source_format, run.response_format)
        fit = fits.get(key)
        if fit is None:
            fit = fits[key] = self._select(p, run.source_format, run.response_format)
        if isinstance(fit, UnsupportedFormat):
            raise UnsupportedFormat(fit.message, plugin_id=fit.plugin_id)
        return fit

    def _select(
        self, p: Participant, source: str, response: str
    ) -> tuple[str, str] | UnsupportedFormat:
        inputs, outputs = formats.declared(dict(p.capabilities))
        try:
            chosen = formats.select_input(
                p.name, inputs, source, self._can_translate("request.translate")
            )
            out = formats.select_output(
                p.name, outputs, response, chosen, self._can_translate("response.translate")
            )
        except UnsupportedFormat as exc:
            return exc
        return chosen, out

    def _choose_executor(self, run: _Run, routed: str) -> None:
        """Host handlers first, then the plugins that serve the model, by priority."""
        allowed = run.req.executors
        key = (run.req.model, run.source_format, run.response_format, allowed)
        if routed:
            candidates: tuple[Participant, ...] = tuple(
                p for p in run.plan["executor.execute"] if p.name == routed
            )
        else:
            # Without a router the choice depends on the model, formats and limit only.
            chosen = run.view.chosen.get(key)
            if chosen is not None:
                run.executor, run.input_format, run.output_format = chosen
                return
            candidates = self._candidates(run)
        if allowed is not None:
            candidates = tuple(p for p in candidates if p.native is not None or p.name in allowed)
        first_error: UnsupportedFormat | None = None
        for p in candidates:
            try:
                run.input_format, run.output_format = self._formats(run, p)
            except UnsupportedFormat as exc:
                first_error = first_error or exc
                continue
            run.executor = p
            if not routed:
                run.view.chosen[key] = (p, run.input_format, run.output_format)
            return
        if first_error is not None:
            self._complete(run, "failed", first_error.http_status, first_error.message)
            raise first_error
        if allowed is not None:
            problem = (
                f"no executor this request may use serves model {run.req.model!r} (it may use "
                f"plugins {', '.join(sorted(allowed)) or 'none'}: the client key's `plugins` "
                "list in api-keys); add the executor's plugin ID there"
            )
        else:
            problem = (
                f"no executor serves model {run.req.model!r}; load a plugin with the executor "
                "capability that lists it (model.static) or a model router that picks one"
            )
        err = NoHandler(problem, method="executor.execute")
        self._complete(run, "failed", err.http_status, err.message)
        raise err

    def _candidates(self, run: _Run) -> tuple[Participant, ...]:
        view, model = run.view, run.req.model
        found = view.candidates.get(model)
        if found is None:
            everyone = run.plan["executor.execute"]
            catalog = self._catalog_of(view)
            owners = catalog.executors_for(model)
            listed = {e.plugin_id for e in catalog.entries}
            found = (
                *(p for p in everyone if p.native is not None),
                *(p for p in everyone if p.name in owners),
                # An executor that lists no models of its own takes any model
                # (docs/PIPELINE.md: what we do differently).
                *(
                    p
                    for p in everyone
                    if p.native is None and p.name not in owners and p.name not in listed
                ),
            )
            view.candidates[model] = found
        return found

    def _intercept_request(self, run: _Run, method: str, to_format: str) -> None:
        participants = run.plan[method]
        if not participants:
            return
        model = run.req.model
        request: dict[str, Any] | None = None
        for p in participants:
            # Built once for the stage; again only after a participant changed the headers
            # or the body, or after a host handler, which may have changed the dict itself.
            if request is None:
                request = {
                    "RequestID": run.request_id,
                    "SourceFormat": run.source_format,
                    "ToFormat": to_format,
                    "Model": model,
                    "RequestedModel": model,
                    "Stream": run.stream,
                    "Metadata": run.metadata,
                    "Headers": headers_json(run.headers),
                    "Body": run.b64(run.body),
                }
            answer = run.stages.attempt(p, method, request)
            if p.native is not None:
                request = None
            if not answer or not isinstance(answer, Mapping):
                continue
            headers = merge_headers(run.headers, answer)
            if headers is not run.headers:
                run.headers, request = headers, None
            raw = ci_get(answer, "body", "")
            if raw:
                run.body, request = b64decode(raw, "Body"), None
                if method == "request.intercept_after":
                    run.original = run.body
            if ci_get(answer, "terminate") is True:
                status = ci_get(answer, "statuscode", 0)
                status = status if isinstance(status, int) and 100 <= status <= 599 else 403
                body = b64decode(ci_get(answer, "responsebody", "") or "", "ResponseBody")
                err = RequestRejected(
                    f"request rejected by {p.name} in {method} (status {status})",
                    response_body=body,
                    response_headers=headers_json(
                        headers_of(ci_get(answer, "responseheaders", None))
                    ),
                    plugin_id=None if p.native else p.name,
                    method=method,
                    http_status=status,
                )
                self._complete(run, "rejected", status, err.message)
                raise err

    def _translate_request(self, run: _Run, stream: bool) -> None:
        source, target = run.source_format, run.input_format
        if source == target:
            return
        base = {"FromFormat": source, "ToFormat": target, "Model": run.req.model, "Stream": stream}
        stages, enc = run.stages, run.b64
        body = stages.body_chain(
            "request.normalize", run.plan["request.normalize"], run.body, base, enc
        )
        translated = stages.body_first(
            "request.translate", run.plan["request.translate"], body, base, enc
        )
        if translated is None:
            assert run.executor is not None
            err = UnsupportedFormat(
                f"no request translator turned {source} into {target} for executor "
                f"{run.executor.name}; load a plugin with request_translator for that pair",
                plugin_id=run.executor.name,
                method="request.translate",
            )
            self._complete(run, "failed", err.http_status, err.message)
            raise err
        run.body = translated

    def _executor_request(self, run: _Run, stream: bool) -> dict[str, Any]:
        req = run.req
        return {
            "Model": req.model,
            "Format": run.output_format,
            "Stream": stream,
            "Alt": req.alt,
            "Headers": headers_json(run.headers),
            "Query": headers_json(req.query),
            "OriginalRequest": run.b64(run.original),
            "SourceFormat": run.input_format,
            "Payload": run.b64(run.body),
            "Metadata": run.metadata,
        }

    def _open_stream(self, run: _Run) -> PluginStream:
        assert run.executor is not None
        request = self._executor_request(run, True)
        if run.executor.native is not None:
            answer = run.stages.call(run.executor, "executor.execute_stream", request)
            return SyncStream(answer)
        return self._source.call_stream(run.executor.name, "executor.execute_stream", request)

    def _translate_response(self, run: _Run, body: bytes, *, stream: bool) -> bytes:
        source, target = run.output_format, run.response_format
        if source == target:
            return body
        base = {
            "FromFormat": source,
            "ToFormat": target,
            "Model": run.req.model,
            "Stream": stream,
            "OriginalRequest": run.b64(run.original),
            "TranslatedRequest": run.b64(run.body),
        }
        stages, enc = run.stages, _Memo().b64
        body = stages.body_chain(
            "response.normalize_before",
            run.plan["response.normalize_before"],
            body,
            base,
            enc,
        )
        body = (
            stages.body_first("response.translate", run.plan["response.translate"], body, base, enc)
            or body
        )
        return stages.body_chain(
            "response.normalize_after",
            run.plan["response.normalize_after"],
            body,
            base,
            enc,
        )

    def _intercept_response(
        self, run: _Run, body: bytes, headers: Headers
    ) -> tuple[bytes, Headers]:
        req = run.req
        for p in run.plan["response.intercept_after"]:
            answer = run.stages.attempt(
                p,
                "response.intercept_after",
                {
                    "RequestID": run.request_id,
                    "SourceFormat": run.response_format,
                    "Model": req.model,
                    "RequestedModel": req.model,
                    "Stream": False,
                    "RequestHeaders": headers_json(run.headers),
                    "ResponseHeaders": headers_json(headers),
                    "OriginalRequest": run.b64(run.original),
                    "RequestBody": run.b64(run.body),
                    "Body": b64encode(body),
                    "StatusCode": 200,
                    "Metadata": run.metadata,
                },
            )
            if isinstance(answer, Mapping):
                headers = merge_headers(headers, answer)
                raw = ci_get(answer, "body", "")
                if raw:
                    body = b64decode(raw, "Body")
        return body, headers

    def _intercept_chunk(
        self,
        run: _Run,
        interceptors: Sequence[Participant],
        headers: Headers,
        body: bytes,
        *,
        index: int,
        history: list[bytes],
    ) -> tuple[Headers, bytes, bool]:
        req = run.req
        base = {
            "RequestID": run.request_id,
            "SourceFormat": run.response_format,
            "Model": req.model,
            "RequestedModel": req.model,
            "RequestHeaders": headers_json(run.headers),
            "HistoryChunks": [b64encode(h) for h in history],
            "ChunkIndex": index,
            "Metadata": run.metadata,
        }
        bodies = {"OriginalRequest": run.b64(run.original), "RequestBody": run.b64(run.body)}
        drop = False
        for p in interceptors:
            request = {**base, "ResponseHeaders": headers_json(headers), "Body": b64encode(body)}
            # Schema 3 and later: payload chunks leave out the request bodies, which the
            # plugin saw at header-init; older plugins get them on every chunk.
            if index == HEADER_INIT_INDEX or p.schema_version < SCHEMA_CHUNKS_OMIT_BODIES:
                request.update(bodies)
            answer = run.stages.attempt(p, "response.intercept_stream_chunk", request)
            if not isinstance(answer, Mapping):
                continue
            headers = merge_headers(headers, answer)
            raw = ci_get(answer, "body", "")
            if raw and index != HEADER_INIT_INDEX:
                body = b64decode(raw, "Body")
            if ci_get(answer, "dropchunk") is True:
                drop = True
                break
        return headers, body, drop

    # -- observers -----------------------------------------------------------------------

    def _fail(self, run: _Run, exc: PluginError, *, stream: bool) -> None:
        if exc.plugin_id is None and run.executor is not None and run.executor.native is None:
            exc.plugin_id = run.executor.name
        self._usage(run, failed=exc.message)
        self._complete(run, "failed", exc.http_status, exc.message)

    def _usage(self, run: _Run, *, failed: str | None) -> None:
        if run.req.caller:
            return
        observers = run.plan["usage.handle"]
        if not observers:
            return
        executor = run.executor.name if run.executor else ""
        run.stages.broadcast(
            "usage.handle",
            observers,
            {
                "Provider": executor,
                "ExecutorType": executor,
                "Model": run.req.model,
                "Source": "cliproxy-host",
                "Generate": True,
                "RequestedAt": _stamp(run.started_at),
                "Latency": int((time.monotonic() - run.started) * 1e9),
                "Failed": failed is not None,
                "Failure": {"Message": failed or ""},
                "Detail": {},
            },
        )

    def _complete(self, run: _Run, outcome: str, status: int, error: str) -> None:
        observers = run.plan["request.complete"]
        if not observers:
            return
        run.stages.broadcast(
            "request.complete",
            observers,
            {
                "RequestID": run.request_id,
                "SourceFormat": run.source_format,
                "Model": run.req.model,
                "RequestedModel": run.req.model,
                "Stream": run.stream,
                "Outcome": outcome,
                "StatusCode": status,
                "Error": error,
                "StartedAt": _stamp(run.started_at),
                "CompletedAt": _stamp(time.time()),
                "Metadata": run.metadata,
            },
        )


_MISSING: Final = object()


def _payload_and_headers(answer: Any) -> tuple[Any, Any]:
    """ci_get(answer, "payload", "") and ci_get(answer, "headers"), read in one pass."""
    if type(answer) is not dict and not isinstance(answer, Mapping):
        return "", None
    payload = answer.get("payload", _MISSING)
    headers = answer.get("headers", _MISSING)
    if payload is _MISSING or headers is _MISSING:
        # As ci_get: the exact spelling first, else the first name that folds to it.
        for name, value in answer.items():
            if not isinstance(name, str):
                continue
            folded = name.casefold()
            if payload is _MISSING and folded == "payload":
                payload = value
            elif headers is _MISSING and folded == "headers":
                headers = value
    return ("" if payload is _MISSING else payload), (None if headers is _MISSING else headers)


def _trim(history: list[bytes]) -> None:
    while len(history) > HISTORY_CHUNKS or sum(map(len, history)) > HISTORY_BYTES:
        history.pop(0)
