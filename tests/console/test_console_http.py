"""The console over a real server with a real HTTP client: its assets, sign-in and the
session cookie, CSRF on writes, the shared failure limit, the config form's checks and the
comments it keeps, and opening plugin resources and menus."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser

import httpx

from cliproxy_host.console.session import COOKIE, SessionStore

from ..serverutil import KEY, RunningServer
from .conftest import CONFIG_HEAD, ENTRY_COMMENT, LOGO

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextmanager
def signed_in(server: RunningServer) -> Iterator[tuple[httpx.Client, str]]:
    """A client holding a session cookie, and the session's CSRF token."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        answer = client.post("/console/sign-in", data={"key": KEY})
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/console"
        page = client.get("/console")
        assert page.status_code == 200, page.text
        found = _TOKEN.search(page.text)
        assert found is not None
        yield client, found.group(1)


class _Refs(HTMLParser):
    """Every src and href of a page, and every control that needs a label."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.controls: list[dict[str, str | None]] = []
        self.labels: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "label" and values.get("for"):
            self.labels.add(str(values["for"]))
        if tag in ("input", "select", "textarea") and values.get("type") != "hidden":
            self.controls.append(values)


def _parsed(html: str) -> _Refs:
    refs = _Refs()
    refs.feed(html)
    return refs


def test_console_pages_load_only_their_own_assets_shipped_in_the_package(
    console_server: RunningServer,
) -> None:
    anonymous = console_server.anonymous
    sign_in = anonymous.get("/console/sign-in")
    assert sign_in.status_code == 200
    assert "default-src 'self'" in sign_in.headers["content-security-policy"]
    with signed_in(console_server) as (client, _):
        pages = [sign_in.text, client.get("/console").text]
        pages.append(client.get("/console/plugins/knobs").text)
    for html in pages:
        for ref in _parsed(html).refs:
            # Same origin only (a logo inline): nothing is fetched from elsewhere.
            assert ref.startswith(("/", "#", "about:blank", "data:image/png")), ref
    script = anonymous.get("/console/static/htmx.min.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "htmx" in script.text[:200]
    assert anonymous.get("/console/static/htmx.LICENSE").status_code == 200
    assert anonymous.get("/console/static/console.css").status_code == 200


def test_every_control_has_a_label_and_errors_name_their_field(
    console_server: RunningServer,
) -> None:
    with signed_in(console_server) as (client, token):
        for path in ("/console/sign-in", "/console", "/console/plugins/knobs"):
            html = client.get(path).text if path != "/console/sign-in" else ""
            html = html or console_server.anonymous.get(path).text
            parsed = _parsed(html)
            for control in parsed.controls:
                assert control.get("id") in parsed.labels, (path, control)
        answer = client.post(
            "/console/plugins/knobs/config",
            data={"csrf_token": token, "retries": "abc"},
            headers={"HX-Request": "true"},
        )
    assert answer.status_code == 422
    parsed = _parsed(answer.text)
    (invalid,) = [c for c in parsed.controls if c.get("aria-invalid") == "true"]
    assert invalid["name"] == "retries"
    error_id = f"{invalid['id']}-error"
    assert error_id in str(invalid["aria-describedby"])
    assert f'id="{error_id}" class="error">expected an integer, got &#39;abc&#39;' in answer.text


def test_without_a_session_the_console_sends_the_browser_to_sign_in(
    console_server: RunningServer,
) -> None:
    anonymous = console_server.anonymous
    for path in ("/console", "/console/plugins/knobs"):
        answer = anonymous.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/sign-in"
    # htmx is told to load the sign-in page, and nothing was written.
    answer = anonymous.post(
        "/console/plugins/knobs/enabled",
        data={"enabled": "false"},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 401
    assert answer.headers["hx-redirect"] == "/console/sign-in"
    assert console_server.service.config.plugin_entry("knobs").enabled
    with httpx.Client(base_url=console_server.base_url, cookies={COOKIE: "made-up"}) as forged:
        assert forged.get("/console").status_code == 303


def test_sign_in_sets_an_httponly_strict_cookie_secure_only_over_https(
    console_server: RunningServer,
) -> None:
    anonymous = console_server.anonymous
    page = anonymous.get("/console/sign-in").text
    assert 'type="password"' in page
    plain = anonymous.post("/console/sign-in", data={"key": KEY})
    cookie = plain.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # loopback HTTP still signs in
    # Behind a TLS-terminating proxy on loopback (uvicorn trusts its X-Forwarded-Proto).
    tls = anonymous.post(
        "/console/sign-in", data={"key": KEY}, headers={"X-Forwarded-Proto": "https"}
    )
    assert tls.status_code == 303
    assert "Secure" in tls.headers["set-cookie"]


def test_wrong_keys_at_sign_in_count_toward_the_same_lockout_as_the_api(
    console_server: RunningServer,
) -> None:
    anonymous = console_server.anonymous
    empty = anonymous.post("/console/sign-in", data={"key": ""})
    assert empty.status_code == 400
    for _ in range(5):
        wrong = anonymous.post("/console/sign-in", data={"key": "not-the-key"})
        assert wrong.status_code == 401
        assert "not the management key" in wrong.text
    locked = anonymous.post("/console/sign-in", data={"key": KEY})
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert "Too many wrong keys" in locked.text
    # One limiter: the API refuses this address as well, even with the right key.
    assert console_server.client.get("/v0/management/plugins").status_code == 429


def test_every_write_needs_the_session_csrf_token_and_a_same_origin_page(
    console_server: RunningServer,
) -> None:
    service = console_server.service
    with signed_in(console_server) as (client, token):
        url = "/console/plugins/knobs/enabled"
        missing = client.post(url, data={"enabled": "false"})
        assert missing.status_code == 403
        assert "security token" in missing.text
        wrong = client.post(url, data={"enabled": "false", "csrf_token": token + "x"})
        assert wrong.status_code == 403
        foreign = client.post(
            url,
            data={"enabled": "false", "csrf_token": token},
            headers={"Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403
        assert service.config.plugin_entry("knobs").enabled
        # The header htmx sends works as the form field does.
        done = client.post(
            url,
            data={"enabled": "false", "back": "/console"},
            headers={"X-CSRF-Token": token, "HX-Request": "true"},
        )
        assert done.status_code == 200, done.text
        assert not service.config.plugin_entry("knobs").enabled
        assert ">disabled<" in done.text
        assert "Enable<" in done.text
        again = client.post(url, data={"enabled": "true", "csrf_token": token})
        assert again.status_code == 303
        assert service.config.plugin_entry("knobs").enabled


def test_sign_out_ends_the_session_on_the_server(console_server: RunningServer) -> None:
    with signed_in(console_server) as (client, token):
        cookie = client.cookies[COOKIE]
        out = client.post("/console/sign-out", data={"csrf_token": token})
        assert out.status_code == 303
        assert out.headers["location"] == "/console/sign-in"
        assert f'{COOKIE}=""' in out.headers["set-cookie"]
        # The old cookie is worthless now, even if a browser kept it.
    with httpx.Client(base_url=console_server.base_url, cookies={COOKIE: cookie}) as stale:
        assert stale.get("/console").status_code == 303


def test_sessions_expire_when_idle_and_after_their_lifetime() -> None:
    now = [1000.0]
    store = SessionStore(idle=60, lifetime=300, clock=lambda: now[0])
    token, session = store.open()
    assert store.get(token) is session
    now[0] += 59
    assert store.get(token) is session  # use restarts the idle clock
    now[0] += 61
    assert store.get(token) is None
    assert len(store) == 0
    busy, _ = store.open()
    for _ in range(5):
        now[0] += 50
        assert store.get(busy) is not None  # 250 s in, used every 50 s
    now[0] += 51
    assert store.get(busy) is None  # 301 s after sign-in, however busy
    assert store.get(None) is None


def test_the_config_form_saves_typed_values_and_keeps_the_files_comments(
    console_server: RunningServer,
) -> None:
    service = console_server.service
    with signed_in(console_server) as (client, token):
        page = client.get("/console/plugins/knobs")
        assert "How often to retry (a whole number)" in page.text
        assert '<option value="low">low</option>' in page.text
        assert f'src="{LOGO}"' in page.text
        answer = client.post(
            "/console/plugins/knobs/config",
            data={
                "csrf_token": token,
                "label": "hello",
                "retries": "7",
                "ratio": "0.5",
                "verbose": "true",
                "level": "high",
                "tags": '["a", "b"]',
            },
            headers={"HX-Request": "true"},
        )
        assert answer.status_code == 200, answer.text
        assert "Saved to" in answer.text
        settings = service.config.plugin_entry("knobs").as_mapping()
        assert settings == {
            "enabled": True,
            "retries": 7,
            "label": "hello",
            "ratio": 0.5,
            "verbose": True,
            "level": "high",
            "tags": ["a", "b"],
        }
        text = service.config_path.read_text(encoding="utf-8")
        assert text.startswith(CONFIG_HEAD)
        assert ENTRY_COMMENT + "      retries: 7\n" in text
        # An empty box removes the key; the plugin was reconfigured with what was saved.
        cleared = client.post(
            "/console/plugins/knobs/config",
            data={"csrf_token": token, "label": "", "retries": "7"},
        )
        assert cleared.status_code == 200
        assert "label" not in service.config.plugin_entry("knobs").as_mapping()
        assert service.host.call("knobs", "last_config", {}) is not None


INVALID = [
    ("retries", "1.5", "expected an integer, got &#39;1.5&#39;"),
    ("ratio", "half", "expected a number, got &#39;half&#39;"),
    ("verbose", "yes", "expected a boolean, got &#39;yes&#39;"),
    ("level", "max", "expected one of low, high, got &#39;max&#39;"),
    ("tags", "[1,", "expected JSON (array)"),
    ("tags", '{"a": 1}', "expected an array"),
]


def test_an_invalid_value_is_refused_beside_its_field_and_nothing_is_written(
    console_server: RunningServer,
) -> None:
    before = console_server.service.config_path.read_bytes()
    with signed_in(console_server) as (client, token):
        for field, value, message in INVALID:
            answer = client.post(
                "/console/plugins/knobs/config",
                data={"csrf_token": token, "retries": "4", field: value},
                headers={"HX-Request": "true"},
            )
            assert answer.status_code == 422, field
            assert message in answer.text, answer.text
            assert "Not saved" in answer.text
    assert console_server.service.config_path.read_bytes() == before


def test_resources_and_get_menus_open_inside_the_console(
    console_server: RunningServer,
) -> None:
    with signed_in(console_server) as (client, _):
        page = client.get("/console/plugins/simple-c").text
        assert 'iframe name="viewer"' in page
        assert 'sandbox="allow-scripts allow-forms"' in page
        resource = "/console/plugins/simple-c/open?path=/v0/resource/plugins/simple-c/index.html"
        assert f'href="{resource}" target="viewer">Simple C: simple-c status page<' in page
        opened = client.get(resource)
        # A fresh signed link of the API, which opens the page without a key.
        assert opened.status_code == 303
        link = opened.headers["location"]
        assert link.startswith("/v0/resource/plugins/simple-c/index.html?exp=")
        shown = console_server.anonymous.get(link)
        assert shown.status_code == 200
        assert "<h1>simple-c</h1>" in shown.text
        # A GET route with a menu is answered by its plugin, in a sandbox of its own.
        knobs = client.get("/console/plugins/knobs").text
        assert "Knobs status<" in knobs
        assert "Reset knobs" not in knobs  # a POST route: no link that cannot open
        assert "/panel.html<" in knobs  # a resource without a label
        route = client.get("/console/plugins/knobs/open?path=/v0/management/knobs/status")
        assert route.status_code == 200
        assert route.headers["content-security-policy"].startswith("sandbox")
        refused = client.get("/console/plugins/knobs/open?path=/v0/management/knobs/reset")
        assert refused.status_code == 404


def test_console_writes_are_audited_as_the_apis_are(console_server: RunningServer) -> None:
    """Enabling, disabling and saving the config form through the console are in the audit
    log under the API's action names, failures with their code; a write refused for its
    token never began and is not."""
    with signed_in(console_server) as (client, token):
        base = "/console/plugins/knobs"
        no_token = client.post(f"{base}/enabled", data={"enabled": "false"})
        assert no_token.status_code == 403
        answers = [
            client.post(f"{base}/enabled", data={"enabled": "false", "csrf_token": token}),
            client.post(
                f"{base}/enabled",
                data={"enabled": "true", "back": "/console"},
                headers={"X-CSRF-Token": token, "HX-Request": "true"},
            ),
            client.post(f"{base}/config", data={"csrf_token": token, "retries": "5"}),
            client.post(f"{base}/config", data={"csrf_token": token, "retries": "1.5"}),
            client.post(
                "/console/plugins/ghost/enabled", data={"enabled": "true", "csrf_token": token}
            ),
        ]
    assert [a.status_code for a in answers] == [303, 200, 200, 422, 404]
    listed = console_server.client.get("/v0/management/audit")
    assert listed.status_code == 200, listed.text
    entries = list(reversed(listed.json()["entries"]))
    assert [(e["action"], e["route"], e["plugin"], e["outcome"]) for e in entries] == [
        ("plugin.disable", f"POST {base}/enabled", "knobs", "ok"),
        ("plugin.enable", f"POST {base}/enabled", "knobs", "ok"),
        ("config.patch", f"POST {base}/config", "knobs", "ok"),
        ("config.patch", f"POST {base}/config", "knobs", "invalid_config"),
        ("plugin.enable", "POST /console/plugins/ghost/enabled", "ghost", "plugin_not_found"),
    ]
    # The caller is the console's session, as for a store install: the client, no key.
    assert {(e["client"], e["key"], e["detail"]) for e in entries} == {("127.0.0.1", None, None)}
    changed = [e["config_before"] != e["config_after"] for e in entries]
    assert changed == [True, True, True, False, False]
