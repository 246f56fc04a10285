"""The console's store, metrics, log tail and audit views over a real server, a real loopback
registry and a real C plugin, with a real HTTP client."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from cliproxy_host.console.logtail import MAX_TAILS
from cliproxy_host.console.session import COOKIE
from cliproxy_host.console.views import METRICS_POLLS
from cliproxy_host.errors import PluginError
from cliproxy_host.store.sources import source_id

from ..conftest import HostFactory
from ..serverutil import KEY, RunningServer
from ..store.conftest import EXT, Store
from .conftest import CLIENT_KEY, MISSING
from .test_console_http import signed_in

HTMX = {"HX-Request": "true"}


def _options(html: str, key: str) -> list[str]:
    select = re.search(rf'<select id="version-{re.escape(key)}"[^>]*>(.*?)</select>', html, re.S)
    assert select is not None, html
    return re.findall(r'<option value="([^"]+)">', select.group(1))


def test_the_store_view_lists_sources_plugins_versions_and_the_sources_that_failed(
    views_server: RunningServer, store: Store
) -> None:
    with signed_in(views_server) as (client, _):
        page = client.get("/console/store")
        assert page.status_code == 200, page.text
        html = page.text
        assert '<a href="/console/store" aria-current="page">Store</a>' in html
        key = f"{source_id(store.url)}-sp"
        assert _options(html, key) == ["2.0.0", "1.0.0", "1.1.0"]
        assert "Sp <span" in html
        assert "sp, a test plugin" in html
        # The source that cannot be read is named with its URL, beside the one that can.
        assert "Sources that could not be read" in html
        assert store.server.url(MISSING) in html
        assert f'value="{source_id(store.url)}"' in html
        assert "Installing sp" in html  # the indicator shown while an install runs
        assert 'class="htmx-indicator busy" role="status"' in html
    # Signed out: the sign-in page, nothing of the store.
    answer = views_server.anonymous.get("/console/store")
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/sign-in")


def test_installing_from_the_store_view_needs_the_token_and_is_audited(
    views_server: RunningServer,
    store: Store,
    host_factory: HostFactory,
    libraries: dict[str, bytes],
) -> None:
    target = host_factory.arch_dir / f"sp-v1.1.0{EXT}"
    form = {"source": source_id(store.url), "version": "1.1.0", "isolation": "process"}
    with signed_in(views_server) as (client, token):
        refused = client.post("/console/store/sp/install", data=form, headers=HTMX)
        assert refused.status_code == 403
        assert not target.exists()

        done = client.post(
            "/console/store/sp/install", data=form, headers={**HTMX, "X-CSRF-Token": token}
        )
        assert done.status_code == 200, done.text
        assert f"Installed sp 1.1.0 from 127.0.0.1:{store.server.port} into {target}" in done.text
        assert target.read_bytes() == libraries["1.1.0"]
        info = views_server.service.host.plugin("sp")
        assert info is not None
        assert info.registered

        listed = client.get("/console/store").text
        assert 'badge status-update">update available' in listed
        assert "<dt>Installed</dt><dd>1.1.0</dd>" in listed

        # A version the store does not offer: the same code as the API's, shown.
        api = views_server.client.post(
            "/v0/management/plugin-store/sp/install", params={"version": "9.9.9"}
        )
        assert api.status_code >= 400
        code = api.json()["error"]
        failed = client.post(
            "/console/store/sp/install",
            data={**form, "version": "9.9.9", "csrf_token": token},
            headers=HTMX,
        )
        assert failed.status_code == api.status_code
        assert f"<code>{code}</code>" in failed.text

        # Without htmx (no script): the whole store page, with the outcome on it.
        plain = client.post(
            "/console/store/sp/install", data={**form, "version": "2.0.0", "csrf_token": token}
        )
        assert plain.status_code == 200
        assert "<h1>Store</h1>" in plain.text
        assert "Installed sp 2.0.0" in plain.text
        assert (host_factory.arch_dir / f"sp-v2.0.0{EXT}").exists()

    trail = views_server.service.audit
    assert trail is not None
    console = [
        e for e in trail.page(plugin="sp").entries if e["route"] == "POST /console/store/sp/install"
    ]
    assert [(e["action"], e["outcome"]) for e in console] == [
        ("plugin.install", "ok"),
        ("plugin.install", code),
        ("plugin.install", "ok"),
    ]
    assert console[2]["client"] == "127.0.0.1"
    assert console[2]["config_before"] != console[2]["config_after"]
    assert "version 1.1.0" in console[2]["detail"]
    assert "console" in console[2]["detail"]


def test_the_metrics_view_shows_the_hosts_counts_and_stops_polling_after_its_bound(
    views_server: RunningServer,
) -> None:
    host = views_server.service.host
    for _ in range(3):
        host.call("tp", "echo", {"a": 1})
    with pytest.raises(PluginError):
        host.call("tp", "fail", {})
    with signed_in(views_server) as (client, _):
        page = client.get("/console/metrics")
        assert page.status_code == 200
        row = re.search(
            r'<tr><th scope="row"><a href="/console/plugins/tp">tp</a></th>(.*?)</tr>', page.text
        )
        assert row is not None, page.text
        cells = re.findall(r"<td>([^<]*)</td>", row.group(1))
        calls, errors, latency, in_flight, state, restarts, breaker, fused = cells
        assert (calls, errors, in_flight) == ("4", "1", "0")
        assert latency.endswith(("µs", "ms", " s"))
        assert (state, restarts, breaker, fused) == ("running", "0", "closed", "no")
        assert 'hx-get="/console/metrics/table?n=1" hx-trigger="every 5s"' in page.text

        host.call("tp", "echo", {})
        table = client.get("/console/metrics/table?n=1", headers=HTMX)
        assert table.status_code == 200
        assert "<td>5</td>" in table.text
        assert "/console/metrics/table?n=2" in table.text
        last = client.get(f"/console/metrics/table?n={METRICS_POLLS}", headers=HTMX)
        assert "hx-trigger" not in last.text
        assert "no longer refreshing" in last.text
    gone = views_server.anonymous.get("/console/metrics/table", headers=HTMX)
    assert (gone.status_code, gone.headers["hx-redirect"]) == (401, "/console/sign-in")


def _events(lines: Iterator[str], until: str, timeout: float = 10.0) -> list[str]:
    """The data lines read until one contains `until` (or an `end` event)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    for line in lines:
        if line.startswith("data: "):
            seen.append(line[6:])
            if until in line:
                return seen
        if line == "event: end" or time.monotonic() > deadline:
            break
    return seen


def test_the_log_tail_streams_the_hosts_lines_with_keys_masked_and_ends_with_the_session(
    views_server: RunningServer,
) -> None:
    log = logging.getLogger("cliproxy_host.tests.console")
    with signed_in(views_server) as (client, token):
        cookie = client.cookies[COOKIE]
        log.warning("before the tail: key=%s", KEY)
        with client.stream("GET", "/console/logs", timeout=15) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            early = _events(lines, "before the tail")
            assert early
            assert early[-1].endswith("before the tail: key=***")
            log.warning("Authorization: Bearer %s then %s and %s", KEY, KEY, CLIENT_KEY)
            late = _events(lines, "Authorization")
            assert late[-1].endswith("Authorization: *** *** then *** and ***")
            assert not any(KEY in line for line in early + late)

            # A bounded number of tails: the next ones are refused while these are open.
            others = []
            with httpx.Client(base_url=views_server.base_url, cookies={COOKIE: cookie}) as other:
                try:
                    for _ in range(MAX_TAILS - 1):
                        opened = other.stream("GET", "/console/logs", timeout=15)
                        others.append(opened)
                        assert opened.__enter__().status_code == 200
                    over = other.get("/console/logs", timeout=15)
                    assert over.status_code == 429
                finally:
                    for opened in others:
                        opened.__exit__(None, None, None)

            # Signing out ends the stream (bounded: within a few polls).
            started = time.monotonic()
            threading.Thread(
                target=lambda: httpx.post(
                    f"{views_server.base_url}/console/sign-out",
                    data={"csrf_token": token},
                    cookies={COOKIE: cookie},
                    timeout=15,
                ),
                daemon=True,
            ).start()
            rest = list(lines)
            assert time.monotonic() - started < 10
            assert "event: end" in rest
            assert "data: the tail ended; reload the page to open it again" in rest
    assert views_server.anonymous.get("/console/logs").status_code == 401


def test_the_audit_view_pages_newest_first_and_filters_by_plugin(
    views_server: RunningServer,
) -> None:
    trail = views_server.service.audit
    assert trail is not None
    for n in range(60):
        trail.record(
            action="plugin.config",
            route=f"PUT /v0/management/plugins/{'a' if n % 2 else 'b'}/config",
            plugin="a" if n % 2 else "b",
            client="127.0.0.1",
            key="0123456789abcdef",
            config_before="x",
            config_after="y",
            detail=f"write {n}",
        )
    newest = trail.page(limit=1).entries[0]["seq"]
    with signed_in(views_server) as (client, _):
        first = client.get("/console/audit")
        assert first.status_code == 200
        seqs = [int(s) for s in re.findall(r"<tr><td>(\d+)</td>", first.text)]
        assert len(seqs) == 50
        assert seqs[0] == newest
        assert seqs == sorted(seqs, reverse=True)
        assert "write 59" in first.text
        assert "0123456789abcdef" in first.text
        older = re.search(r'href="(/console/audit\?before=\d+)" rel="next"', first.text)
        assert older is not None
        second = client.get(older.group(1))
        rest = [int(s) for s in re.findall(r"<tr><td>(\d+)</td>", second.text)]
        assert rest
        assert max(rest) < min(seqs)
        assert rest == sorted(rest, reverse=True)

        only_a = client.get("/console/audit", params={"plugin": "a"})
        rows = re.findall(r"<tr><td>\d+</td>.*?</tr>", only_a.text)
        assert len(rows) == 30
        assert all('href="/console/audit?plugin=a">a</a>' in row for row in rows)
        assert 'id="audit-plugin" name="plugin" value="a"' in only_a.text
    assert views_server.anonymous.get("/console/audit").status_code == 303
