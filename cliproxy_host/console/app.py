"""create_console: the /console pages (sign-in, plugins, a plugin's status, config form and
resources, the store, live metrics and the log tail, the audit log) and their writes, over
the same service, key, limiter and links as the API."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..discovery import is_valid_id
from ..errors import InvalidConfig, InvalidPluginId, PluginError, PluginNotFound
from ..host.service import HostService

# The management API's objects the console shares: one key, one failure limiter (a wrong
# key counts the same here as there), one set of plugin routes and resource links.
from ..management.audit import Caller, audited
from ..management.auth import ENV_KEY, ManagementAuth
from ..management.errors import ApiError
from ..management.plugin_routes import PluginRoutes
from ..management.resource_links import ResourceLinks
from ..observe.audit import MAX_PAGE
from ..store.install import InstallRequest, StoreInstaller
from ..store.listing import store_list
from ..web.body_limit import BodyLimit
from ..web.header_limit import HeaderLimit
from .csrf import FIELD, HEADER, CsrfRefused, check_origin, check_token
from .forms import build_fields, parse_submission
from .logtail import TAIL_SECONDS, LogRing, TailSlots, mask, shared_ring
from .plugins import PluginView, plugin_view, plugin_views
from .render import STATIC_DIR, page
from .session import COOKIE, Session, SessionStore
from .views import METRICS_POLL_SECONDS, METRICS_POLLS, metrics_rows, store_rows

__all__ = ["NAV", "PREFIX", "NavItem", "create_console"]

log = logging.getLogger(__name__)

PREFIX: Final = "/console"
SIGN_IN: Final = f"{PREFIX}/sign-in"
API_NAME: Final = "the console"  # in the refusals of the caps


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str


# The console's sections; the navigation never links to a page that is not there.
NAV: Final = (
    NavItem("Plugins", PREFIX),
    NavItem("Store", f"{PREFIX}/store"),
    NavItem("Metrics", f"{PREFIX}/metrics"),
    NavItem("Audit log", f"{PREFIX}/audit"),
)
# The audit view's page size.
AUDIT_PAGE: Final = 50
# How often an open log tail looks for new lines.
TAIL_POLL_SECONDS: Final = 0.5

Handler = Callable[[Request], Awaitable[Response]]


def _refusal(status: int, code: str, message: str, headers: Mapping[str, str]) -> ASGIApp:
    return PlainTextResponse(f"{code}: {message}\n", status_code=status, headers=dict(headers))


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _caller(request: Request) -> Caller:
    """Who sent a console write, for the audit log: the session's client; no key travels."""
    return Caller(
        f"{request.method} {request.url.path}",
        request.client.host if request.client else None,
        None,
    )


def _enabled(form: Mapping[str, str]) -> bool:
    return form.get("enabled") == "true"


def _enabled_action(form: Mapping[str, str]) -> str:
    """The API's action name for the enabled switch the form asks for."""
    return "plugin.enable" if _enabled(form) else "plugin.disable"


def _config_action(form: Mapping[str, str]) -> str:
    return "config.patch"  # the form sends the fields it shows: a merge, as PATCH is


@dataclass(frozen=True)
class Write:
    """A console write past its prologue: the live session, the form (its CSRF token
    checked), the plugin ID the path names and who sent it."""

    session: Session
    form: dict[str, str]
    plugin_id: str
    caller: Caller


@dataclass(frozen=True)
class PluginWrite(Write):
    """A write to a known plugin: its view, and the audit log's name for the write."""

    view: PluginView
    action: str


class Console:
    """The console's endpoints, behind the network rule (NetworkRule) as every API route is."""

    def __init__(
        self,
        service: HostService,
        auth: ManagementAuth,
        routes: PluginRoutes,
        links: ResourceLinks,
        sessions: SessionStore,
        *,
        ring: LogRing,
        tails: TailSlots,
    ) -> None:
        self.service = service
        self.auth = auth
        self.routes = routes
        self.links = links
        self.sessions = sessions
        self.ring = ring
        self.tails = tails

    # -- shared steps -----------------------------------------------------------------

    def _session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    async def _form(self, request: Request) -> dict[str, str]:
        """The urlencoded form (what browsers and htmx send); a repeated name keeps its last."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise ApiError(
                415,
                "unsupported_media_type",
                "the console's forms are sent as application/x-www-form-urlencoded",
            )
        body = (await request.body()).decode("utf-8", "replace")
        return dict(parse_qsl(body, keep_blank_values=True))

    def _context(self, request: Request, session: Session | None, **extra: Any) -> dict[str, Any]:
        return {
            "nav": NAV,
            "path": request.url.path,
            "session": session,
            "csrf_header": HEADER,
            "csrf_field": FIELD,
            **extra,
        }

    def _signed_out(self, request: Request) -> Response:
        """Where a request without a live session goes: the sign-in page."""
        if _is_htmx(request):
            # htmx follows HX-Redirect with a full page load instead of swapping a fragment.
            return Response(status_code=401, headers={"HX-Redirect": SIGN_IN})
        return RedirectResponse(SIGN_IN, status_code=303)

    def _plugin(self, plugin_id: str) -> PluginView | None:
        if not is_valid_id(plugin_id):
            return None
        return plugin_view(self.service, self.routes, plugin_id)

    async def _write(self, request: Request) -> Write | Response:
        """The prologue of every write: the sign-in page without a session, else the form
        with its CSRF token checked (CsrfRefused otherwise)."""
        session = self._session(request)
        if session is None:
            return self._signed_out(request)
        form = await self._form(request)
        check_token(request, form, session)
        return Write(session, form, request.path_params["plugin_id"], _caller(request))

    async def _plugin_write(
        self, request: Request, action: Callable[[Mapping[str, str]], str]
    ) -> PluginWrite | Response:
        """_write, then the plugin the path names; a plugin that is not there ends the write
        with the not-found page, recorded in the audit log as the API records it."""
        write = await self._write(request)
        if isinstance(write, Response):
            return write
        name = action(write.form)
        view = self._plugin(write.plugin_id)
        if view is None:
            await run_in_threadpool(self._record_missing, write, name)
            return self._not_found(request, write.session, write.plugin_id)
        return PluginWrite(write.session, write.form, write.plugin_id, write.caller, view, name)

    def _record_missing(self, write: Write, action: str) -> None:
        """Audit a write refused for its plugin ID with the code the API's lookup gives."""
        plugin_id = write.plugin_id
        refusal: PluginError = (
            PluginNotFound(
                f"no plugin {plugin_id} under {self.service.config.plugins_dir()} or in the config"
            )
            if is_valid_id(plugin_id)
            else InvalidPluginId(f"{plugin_id!r} is not a valid plugin ID")
        )
        with suppress(PluginError), audited(self.service, write.caller, action, plugin_id):
            raise refusal

    async def _audited(self, write: PluginWrite, change: Callable[[], object]) -> None:
        """Run `change` off the event loop, audited as the API's write of the same action."""

        def run() -> None:
            with audited(self.service, write.caller, write.action, write.plugin_id):
                change()

        await run_in_threadpool(run)

    def _not_found(self, request: Request, session: Session | None, plugin_id: str) -> Response:
        return page(
            "error.html",
            self._context(
                request,
                session,
                title="Not found",
                message=f"There is no plugin {plugin_id!r} under "
                f"{self.service.config.plugins_dir()} or in the config.",
            ),
            status=404,
        )

    # -- sign-in and sign-out -----------------------------------------------------------

    async def sign_in_page(self, request: Request) -> Response:
        if self._session(request) is not None:
            return RedirectResponse(PREFIX, status_code=303)
        return self._sign_in_form(request)

    def _sign_in_form(
        self, request: Request, error: str | None = None, status: int = 200, **headers: str
    ) -> Response:
        configured = self.auth.checker.configured
        if not configured and error is None:
            error = (
                "No management key is configured, so nobody can sign in: set "
                f"remote-management.secret-key or the {ENV_KEY} environment variable."
            )
        return page(
            "sign_in.html",
            self._context(request, None, title="Sign in", error=error),
            status=status,
            headers=headers,
        )

    async def sign_in(self, request: Request) -> Response:
        check_origin(request)
        form = await self._form(request)
        client = request.client.host if request.client else "unknown"
        wait = self.auth.limiter.check(client)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            return self._sign_in_form(
                request,
                f"Too many wrong keys from this address; try again in {seconds} s.",
                429,
                **{"Retry-After": str(seconds)},
            )
        if not self.auth.checker.configured:
            return self._sign_in_form(request, status=403)
        key = form.get("key", "").strip()
        if not key:
            return self._sign_in_form(request, "Enter the management key.", 400)
        ok = self.auth.checker.verify_fast(key)
        if ok is None:
            ok = await run_in_threadpool(self.auth.checker.verify, key)
        if not ok:
            lockout = self.auth.limiter.failure(client)
            log.warning(
                "console sign-in with a wrong management key from client %r%s",
                client,
                "" if lockout is None else f"; locked out for {lockout:g} s",
            )
            return self._sign_in_form(
                request,
                f"That is not the management key (remote-management.secret-key or {ENV_KEY}).",
                401,
            )
        self.auth.limiter.success(client)
        token, _ = self.sessions.open()
        response = RedirectResponse(PREFIX, status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            # Plain HTTP is only served to loopback unless allow-remote, so a loopback
            # operator still signs in; over HTTPS the cookie never travels in clear.
            secure=request.url.scheme == "https",
        )
        return response

    async def sign_out(self, request: Request) -> Response:
        session = self._session(request)
        if session is not None:
            check_token(request, await self._form(request), session)
            self.sessions.close(request.cookies.get(COOKIE))
        response: Response = RedirectResponse(SIGN_IN, status_code=303)
        if _is_htmx(request):
            response = Response(status_code=204, headers={"HX-Redirect": SIGN_IN})
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    # -- pages ------------------------------------------------------------------------

    async def plugins_page(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return self._signed_out(request)
        cfg = self.service.config
        return page(
            "plugins.html",
            self._context(
                request,
                session,
                title="Plugins",
                plugins=plugin_views(self.service, self.routes),
                plugins_enabled=cfg.plugins.enabled,
                plugins_dir=cfg.plugins_dir(),
                plugins_dir_error=self.service.host.plugins_dir_error,
                config_path=self.service.config_path,
            ),
        )

    async def plugin_page(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return self._signed_out(request)
        plugin_id = request.path_params["plugin_id"]
        view = self._plugin(plugin_id)
        if view is None:
            return self._not_found(request, session, plugin_id)
        return self._plugin_page(request, session, view, self._form_state(view))

    def _form_state(
        self,
        view: PluginView,
        values: Mapping[str, Any] | None = None,
        errors: Mapping[str, str] | None = None,
        message: str | None = None,
        failure: str | None = None,
    ) -> dict[str, Any]:
        shown = view.settings if values is None else values
        return {
            "fields": build_fields(view.fields, shown, errors),
            "saved": message,
            "failure": failure,
        }

    def _plugin_page(
        self,
        request: Request,
        session: Session,
        view: PluginView,
        form: Mapping[str, Any],
        status: int = 200,
    ) -> Response:
        return page(
            "plugin.html",
            self._context(request, session, title=view.id, plugin=view, form=form),
            status=status,
        )

    # -- writes -----------------------------------------------------------------------

    async def set_enabled(self, request: Request) -> Response:
        write = await self._plugin_write(request, _enabled_action)
        if isinstance(write, Response):
            return write
        plugin_id, form = write.plugin_id, write.form
        enabled = _enabled(form)
        failure: str | None = None
        status = 200
        try:
            await self._audited(write, lambda: self.service.set_enabled(plugin_id, enabled))
        except PluginError as exc:
            failure, status = exc.message, exc.http_status
        view = self._plugin(plugin_id)
        if view is None:  # deleted meanwhile
            return self._not_found(request, write.session, plugin_id)
        if not _is_htmx(request):
            back = form.get("back", "")
            return RedirectResponse(back if back.startswith(PREFIX) else PREFIX, 303)
        return page(
            "_card.html",
            self._context(
                request,
                write.session,
                plugin=view,
                failure=failure,
                linked=form.get("back") == PREFIX,
            ),
            status=status,
        )

    async def save_config(self, request: Request) -> Response:
        write = await self._plugin_write(request, _config_action)
        if isinstance(write, Response):
            return write
        plugin_id, form, view, session = write.plugin_id, write.form, write.view, write.session
        patch, errors = parse_submission(view.fields, form)

        def change() -> None:
            if errors:
                # Refused as the API refuses settings its checks find wrong, and so recorded.
                raise InvalidConfig(
                    "; ".join(f"plugins.configs.{plugin_id}.{k}: {v}" for k, v in errors.items()),
                    plugin_id=plugin_id,
                )
            self.service.patch_config(plugin_id, patch)

        status = 200
        try:
            await self._audited(write, change)
        except PluginError as exc:
            if errors:
                state = self._form_state(view, form, errors)
                status = 422
            else:
                state = self._form_state(view, form, failure=exc.message)
                status = exc.http_status
        else:
            view = self._plugin(plugin_id) or view
            state = self._form_state(
                view, message=f"Saved to {self.service.config_path}; {plugin_id} reconfigured."
            )
        if not _is_htmx(request):
            return self._plugin_page(request, session, view, state, status)
        return page(
            "_config.html",
            self._context(request, session, plugin=view, form=state),
            status=status,
        )

    async def open_menu(self, request: Request) -> Response:
        """A plugin's resource or menu route, for the console's viewer frame: a resource
        through a fresh signed link, a GET route answered by the plugin in a sandbox."""
        session = self._session(request)
        if session is None:
            return self._signed_out(request)
        plugin_id = request.path_params["plugin_id"]
        path = request.query_params.get("path", "")
        if path in self.routes.resources(plugin_id):
            ttl = self.service.config.remote_management.resource_link_ttl
            return RedirectResponse(self.links.link(path, ttl).url, status_code=303)
        menus = {m.path for m in self.routes.menus(plugin_id)}
        if path not in menus or self.routes.route_owner("GET", path) != plugin_id:
            return PlainTextResponse(
                f"plugin {plugin_id} has no resource or GET menu {path}", status_code=404
            )
        try:
            status, headers, body = await run_in_threadpool(
                lambda: self.routes.handle(
                    plugin_id, method="GET", path=path, headers={}, query={}, body=b""
                )
            )
        except PluginError as exc:
            return PlainTextResponse(exc.message, status_code=exc.http_status)
        kind = next((v[0] for k, v in headers.items() if k.lower() == "content-type" and v), None)
        return Response(
            body,
            status_code=status,
            media_type=kind or "application/octet-stream",
            headers={
                # The plugin's page runs in an origin of its own: it cannot reach the
                # console's session or token, whatever it contains.
                "Content-Security-Policy": "sandbox; frame-ancestors 'self'",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )

    # -- the store ----------------------------------------------------------------------

    async def store_page(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return self._signed_out(request)
        return await self._store_page(request, session)

    async def _store_page(
        self,
        request: Request,
        session: Session,
        result: Mapping[str, Any] | None = None,
        status: int = 200,
    ) -> Response:
        cfg = self.service.config
        failure: str | None = None
        body: dict[str, Any] = {"sources": [], "plugins": []}
        try:
            # Sources are read over the network, each within plugins.store-timeout-seconds.
            body = await run_in_threadpool(
                store_list, cfg, self.service.host.plugins(), with_versions=True
            )
        except PluginError as exc:
            failure = f"{exc.code}: {exc.message}"
        return page(
            "store.html",
            self._context(
                request,
                session,
                title="Store",
                sources=body.get("sources", []),
                rows=store_rows(body),
                source_errors=body.get("source_errors", []),
                failure=failure,
                plugins_enabled=cfg.plugins.enabled,
                config_path=self.service.config_path,
                result=result,
            ),
            status=status,
        )

    async def install(self, request: Request) -> Response:
        """Install a version from the store, audited as the API's install is."""
        write = await self._write(request)
        if isinstance(write, Response):
            return write
        session, form, plugin_id = write.session, write.form, write.plugin_id
        source = form.get("source", "").strip() or None
        version = form.get("version", "").strip() or None
        isolation = form.get("isolation", "process")
        result: dict[str, Any]
        status = 200
        if not is_valid_id(plugin_id) or isolation not in ("process", "inprocess"):
            result = {
                "ok": False,
                "code": "invalid_request",
                "message": f"cannot install {plugin_id!r} with isolation {isolation!r}: "
                "pick a plugin from the list and process or inprocess",
            }
            status = 400
        else:
            detail = f"store {source or 'any source'}, version {version or 'latest'}, console"
            wanted = InstallRequest(
                plugin_id,
                version=version,
                source=source,
                isolation="inprocess" if isolation == "inprocess" else "process",
            )

            def run() -> dict[str, Any]:
                with audited(self.service, write.caller, "plugin.install", plugin_id, detail):
                    return StoreInstaller(self.service).install(wanted).reply()

            try:
                result = {"ok": True, **await run_in_threadpool(run)}
            except PluginError as exc:
                result = {"ok": False, "code": exc.code, "message": exc.message}
                status = exc.http_status
            except ApiError as exc:
                result = {"ok": False, "code": exc.code, "message": exc.message}
                status = exc.status
        if not _is_htmx(request):
            return await self._store_page(request, session, result, status)
        return page("_install.html", self._context(request, session, result=result), status=status)

    # -- metrics and the log tail ---------------------------------------------------------

    def _metrics_context(self, polls: int) -> dict[str, Any]:
        metrics = self.service.host.metrics
        return {
            "metrics_on": metrics is not None,
            "rows": metrics_rows(metrics.numbers()) if metrics is not None else [],
            "poll_seconds": METRICS_POLL_SECONDS,
            "next_poll": polls + 1 if polls < METRICS_POLLS else None,
            "taken": time.strftime("%H:%M:%S"),
        }

    async def metrics_page(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return self._signed_out(request)
        return page(
            "metrics.html",
            self._context(
                request,
                session,
                title="Metrics",
                tail_minutes=TAIL_SECONDS // 60,
                **self._metrics_context(0),
            ),
        )

    async def metrics_table(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return self._signed_out(request)
        try:
            polls = max(0, int(request.query_params.get("n", "0")))
        except ValueError:
            polls = METRICS_POLLS
        return page(
            "_metrics.html", self._context(request, session, **self._metrics_context(polls))
        )

    async def log_tail(self, request: Request) -> Response:
        """The host's recent log lines, then each new one, as server-sent events; ends when
        the session does, after TAIL_SECONDS, or when the client goes."""
        token = request.cookies.get(COOKIE)
        if self._session(request) is None:
            return PlainTextResponse("sign in to the console first", status_code=401)
        if not self.tails.take():
            return PlainTextResponse(
                "too many log tails are open; close one (another tab) and reload",
                status_code=429,
                headers={"Retry-After": "30"},
            )
        is_key = self._key_test()
        ring, sessions, tails = self.ring, self.sessions, self.tails

        async def events() -> AsyncIterator[bytes]:
            try:
                seen = 0
                deadline = time.monotonic() + TAIL_SECONDS
                yield b"retry: 60000\n\n"
                while time.monotonic() < deadline and sessions.alive(token):
                    for line in ring.after(seen):
                        seen = line.seq
                        yield f"id: {line.seq}\ndata: {mask(line.text, is_key)}\n\n".encode()
                    if await request.is_disconnected():
                        return
                    await asyncio.sleep(TAIL_POLL_SECONDS)
                yield b"event: end\ndata: the tail ended; reload the page to open it again\n\n"
            finally:
                tails.give()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    def _key_test(self) -> Callable[[str], bool]:
        """Whether a word of a log line is the management key or a client key."""
        clients = {k.key for k in self.service.config.api_keys}
        checker = self.auth.checker
        return lambda word: word in clients or checker.verify_fast(word) is True

    # -- the audit log --------------------------------------------------------------------

    async def audit_page(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return self._signed_out(request)
        trail = self.service.audit
        plugin = request.query_params.get("plugin", "").strip()[:128] or None
        try:
            before = (
                int(request.query_params["before"]) if "before" in request.query_params else None
            )
        except ValueError:
            before = None
        entries: list[dict[str, Any]] = []
        after: int | None = None
        if trail is not None:
            found = await run_in_threadpool(
                trail.page, plugin=plugin, before=before, limit=min(AUDIT_PAGE, MAX_PAGE)
            )
            entries, after = found.entries, found.next
        return page(
            "audit.html",
            self._context(
                request,
                session,
                title="Audit log",
                audit_on=trail is not None,
                audit_path=trail.path if trail is not None else None,
                entries=entries,
                plugin=plugin or "",
                before=before,
                next_before=after,
            ),
        )


class NetworkRule:
    """The API's rule on who may connect at all (loopback unless allow-remote), before
    anything of the console is served, its static files included."""

    def __init__(self, app: ASGIApp, *, auth: ManagementAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self.auth.network(Request(scope))
            except ApiError as exc:
                await _refusal(exc.status, exc.code, exc.message, exc.headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _gated(handler: Handler) -> Handler:
    """`handler` with its refusals as pages rather than JSON."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return page(
                "error.html",
                {"nav": (), "session": None, "title": "Refused", "message": exc.message},
                status=exc.status,
                headers=exc.headers,
            )
        except CsrfRefused as exc:
            return page(
                "error.html",
                {"nav": NAV, "session": None, "title": "Refused", "message": str(exc)},
                status=403,
            )

    return endpoint


def create_console(
    service: HostService,
    auth: ManagementAuth,
    routes: PluginRoutes,
    links: ResourceLinks,
    *,
    sessions: SessionStore | None = None,
) -> ASGIApp:
    """The console app; `routes` and `links` are the management app's, so menus and
    resource links are the ones the API lists."""
    console = Console(
        service,
        auth,
        routes,
        links,
        sessions or SessionStore(),
        ring=shared_ring(),
        tails=TailSlots(),
    )
    gated = _gated
    plugin = f"{PREFIX}/plugins/{{plugin_id}}"
    app = Starlette(
        routes=[
            Route(PREFIX, gated(console.plugins_page), methods=["GET"]),
            Route(SIGN_IN, gated(console.sign_in_page), methods=["GET"]),
            Route(SIGN_IN, gated(console.sign_in), methods=["POST"]),
            Route(f"{PREFIX}/sign-out", gated(console.sign_out), methods=["POST"]),
            Route(plugin, gated(console.plugin_page), methods=["GET"]),
            Route(f"{plugin}/enabled", gated(console.set_enabled), methods=["POST"]),
            Route(f"{plugin}/config", gated(console.save_config), methods=["POST"]),
            Route(f"{plugin}/open", gated(console.open_menu), methods=["GET"]),
            Route(f"{PREFIX}/store", gated(console.store_page), methods=["GET"]),
            Route(
                f"{PREFIX}/store/{{plugin_id}}/install", gated(console.install), methods=["POST"]
            ),
            Route(f"{PREFIX}/metrics", gated(console.metrics_page), methods=["GET"]),
            Route(f"{PREFIX}/metrics/table", gated(console.metrics_table), methods=["GET"]),
            Route(f"{PREFIX}/logs", console.log_tail, methods=["GET"]),
            Route(f"{PREFIX}/audit", gated(console.audit_page), methods=["GET"]),
            Mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
    )
    app.add_middleware(
        BodyLimit,
        cap=lambda: service.config.remote_management.max_body_bytes,
        api=API_NAME,
        cap_key="remote-management.max-body-bytes",
        refuse=_refusal,
    )
    app.add_middleware(NetworkRule, auth=auth)
    app.add_middleware(HeaderLimit, api=API_NAME, refuse=_refusal)  # added last: runs first
    return app
