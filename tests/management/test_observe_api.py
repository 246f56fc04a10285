"""GET /v0/management/audit and GET /metrics on the real server: what the writes left in the
audit log, and who may scrape the metrics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import CompilePlugin, HostFactory
from ..serverutil import KEY, RunningServer, run_server

METRICS_KEY = "scraper-only-key"


@contextmanager
def start(host_factory: HostFactory, library: Path, **extra: Any) -> Iterator[RunningServer]:
    host_factory.add("simple-c", library)
    host_factory.write_config(
        configs={"simple-c": {"enabled": True, "mode": "safe"}}, extra=extra or None
    )
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        yield running


@pytest.fixture
def server(examples: dict[str, Path], host_factory: HostFactory) -> Iterator[RunningServer]:
    extra = {"remote-management": {"metrics-key": METRICS_KEY}}
    with start(host_factory, examples["simple-c"], **extra) as running:
        yield running


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_write_is_in_the_audit_log_with_who_what_and_the_config_around_it(
    server: RunningServer, host_factory: HostFactory
) -> None:
    config = host_factory.config_path
    digests = [digest(config)]
    writes = [
        ("PATCH", "/v0/management/plugins/simple-c/config", {"mode": "fast"}, "config.patch"),
        ("PUT", "/v0/management/plugins/simple-c/config", {"enabled": True}, "config.replace"),
        ("PATCH", "/v0/management/plugins/simple-c/enabled", {"enabled": False}, "plugin.disable"),
        ("DELETE", "/v0/management/plugins/simple-c", None, "plugin.delete"),
    ]
    for method, path, body, _ in writes:
        response = server.client.request(method, path, json=body)
        assert response.status_code == 200, response.text
        digests.append(digest(config))
    response = server.client.get("/v0/management/audit")
    assert response.status_code == 200, response.text
    entries = response.json()["entries"]
    assert [e["action"] for e in entries] == [w[3] for w in reversed(writes)]
    assert [e["route"] for e in entries] == [f"{w[0]} {w[1]}" for w in reversed(writes)]
    fingerprint = hashlib.sha256(KEY.encode()).hexdigest()[:16]
    for n, entry in enumerate(reversed(entries)):
        assert entry["plugin"] == "simple-c"
        assert entry["client"] == "127.0.0.1"
        assert entry["key"] == fingerprint
        assert entry["outcome"] == "ok"
        assert (entry["config_before"], entry["config_after"]) == (digests[n], digests[n + 1])
    assert [e["seq"] for e in entries] == [4, 3, 2, 1]
    # The key is never written, not even in the file.
    assert KEY not in (config.parent / "audit.jsonl").read_text()


def test_a_refused_write_is_recorded_with_its_error_code(server: RunningServer) -> None:
    response = server.client.put("/v0/management/plugins/ghost/config", json={"enabled": True})
    assert response.status_code == 404
    (entry,) = server.client.get("/v0/management/audit").json()["entries"]
    assert (entry["plugin"], entry["outcome"]) == ("ghost", "plugin_not_found")
    assert entry["config_before"] == entry["config_after"]


def test_the_audit_log_reads_by_plugin_and_page(server: RunningServer) -> None:
    for mode in ("a", "b", "c"):
        server.client.patch("/v0/management/plugins/simple-c/config", json={"mode": mode})
    server.client.patch("/v0/management/plugins/ghost/config", json={"mode": "x"})
    first = server.client.get("/v0/management/audit", params={"plugin": "simple-c", "limit": 2})
    body = first.json()
    assert [e["seq"] for e in body["entries"]] == [3, 2]
    rest = server.client.get(
        "/v0/management/audit", params={"plugin": "simple-c", "before": body["next"]}
    ).json()
    assert ([e["seq"] for e in rest["entries"]], rest["next"]) == ([1], None)
    too_many = server.client.get("/v0/management/audit", params={"limit": 100_000})
    assert too_many.status_code == 400
    assert too_many.json()["error"] == "invalid_body"
    assert server.anonymous.get("/v0/management/audit").status_code == 401


def test_metrics_open_with_the_management_or_the_metrics_key_only(server: RunningServer) -> None:
    server.service.host.call("simple-c", "executor.execute", {"Model": "m", "Payload": ""})
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = server.anonymous.get("/metrics", headers=headers)
        assert response.status_code == 401, response.text
    scraped = server.anonymous.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
    assert scraped.status_code == 200, scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, s.labels.get("plugin"), s.labels.get("method"), s.labels.get("state")): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }
    assert samples[("cliproxy_plugin_calls_total", "simple-c", "executor.execute", None)] == 1
    assert samples[("cliproxy_plugin_state", "simple-c", None, "running")] == 1
    assert server.client.get("/metrics").status_code == 200
    # The metrics key opens the metrics, nothing else.
    listing = server.anonymous.get(
        "/v0/management/plugins", headers={"Authorization": f"Bearer {METRICS_KEY}"}
    )
    assert listing.status_code == 401


def test_with_audit_and_metrics_off_their_routes_answer_not_found(
    examples: dict[str, Path], host_factory: HostFactory
) -> None:
    with start(
        host_factory, examples["simple-c"], audit={"enabled": False}, metrics={"enabled": False}
    ) as server:
        response = server.client.patch(
            "/v0/management/plugins/simple-c/config", json={"mode": "fast"}
        )
        assert response.status_code == 200
        for path in ("/v0/management/audit", "/metrics"):
            response = server.client.get(path)
            assert (response.status_code, response.json()["error"]) == (404, "not_found")
        assert not (host_factory.config_path.parent / "audit.jsonl").exists()


def test_a_write_to_a_plugin_route_is_audited_and_a_read_is_not(
    compile_plugin: CompilePlugin, host_factory: HostFactory, tmp_path: Path
) -> None:
    registration = tmp_path / "reg.json"
    registration.write_text(
        json.dumps(
            {
                "metadata": {
                    "Name": "mp",
                    "Version": "1",
                    "Author": "t",
                    "GitHubRepository": "https://example.invalid",
                },
                "capabilities": {"management_api": True},
            }
        )
    )
    routes = tmp_path / "routes.json"
    routes.write_text(
        json.dumps(
            {
                "Routes": [
                    {"Method": "POST", "Path": "/mp/items"},
                    {"Method": "GET", "Path": "/mp/items"},
                ],
                "Resources": [],
            }
        )
    )
    library = compile_plugin(
        TP_NAME="mp", TP_REGISTRATION_FILE=registration, TP_MANAGEMENT_FILE=routes
    )
    host_factory.add("mp", library)
    host_factory.write_config(configs={"mp": {"enabled": True}})
    with run_server(host_factory.config_path) as server:
        assert server.service.wait_ready(30)
        assert server.client.get("/v0/management/mp/items").status_code == 200
        assert server.client.post("/v0/management/mp/items", json={}).status_code == 200
        (entry,) = server.client.get("/v0/management/audit").json()["entries"]
    assert (entry["action"], entry["route"], entry["plugin"], entry["outcome"]) == (
        "plugin.route",
        "POST /v0/management/mp/items",
        "mp",
        "ok",
    )
