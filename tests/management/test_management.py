"""The management REST API over loopback: every route, auth, persistence, plugin routes."""

from __future__ import annotations

import base64
import gc
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host.abi import LIBRARY_SUFFIX

from ..conftest import CompilePlugin, HostFactory
from ..serverutil import RunningServer, run_server

COMMENTED = """\
# top comment: kept
plugins:
  enabled: true   # master switch
  dir: plugins
  configs:
    # the C example
    simple-c:
      enabled: true
      priority: 10   # runs after rust
      mode: safe
    simple-rust:
      enabled: true
      priority: 20
other-app:        # belongs to another program
  keep: me
"""


@pytest.fixture
def server(examples: dict[str, Path], host_factory: HostFactory) -> Iterator[RunningServer]:
    for pid in ("simple-c", "simple-rust", "http-c"):
        host_factory.add(pid, examples[pid])
    host_factory.config_path.write_text(COMMENTED)
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        yield running


def plugin(listing: dict[str, Any], pid: str) -> dict[str, Any]:
    return next(p for p in listing["plugins"] if p["id"] == pid)


# -- the list ----------------------------------------------------------------------------


def test_what_start_up_built_is_kept_out_of_the_collectors_sight(
    server: RunningServer,
) -> None:
    # Full collections walked it all and stalled requests by tens of milliseconds.
    assert gc.get_freeze_count() > 10_000
    assert server.client.get("/v0/management/plugins").status_code == 200


def test_list_has_the_go_fields_sorted_by_id(server: RunningServer) -> None:
    response = server.client.get("/v0/management/plugins")
    assert response.status_code == 200
    body = response.json()
    assert body["plugins_enabled"] is True
    assert body["plugins_dir"].endswith("plugins")
    assert [p["id"] for p in body["plugins"]] == ["http-c", "simple-c", "simple-rust"]
    entry = plugin(body, "simple-c")
    for field in (
        "id",
        "path",
        "configured",
        "registered",
        "enabled",
        "effective_enabled",
        "supports_oauth",
        "oauth_provider",
        "logo",
        "config_fields",
        "menus",
        "metadata",
    ):
        assert field in entry
    assert entry["effective_enabled"] is True
    assert entry["config_fields"] == [
        {
            "name": "mode",
            "type": "enum",
            "enum_values": ["safe", "fast"],
            "description": entry["config_fields"][0]["description"],
        }
    ]
    assert entry["metadata"]["github_repository"].startswith("https://")
    assert {
        "path": "/v0/management/simple-c/status",
        "menu": "Simple C",
        "description": "Shows the simple-c mode",
    } in entry["menus"]
    assert any(m["path"] == "/v0/resource/plugins/simple-c/index.html" for m in entry["menus"])
    unconfigured = plugin(body, "http-c")
    assert (unconfigured["configured"], unconfigured["registered"]) == (False, False)
    assert unconfigured["effective_enabled"] is False
    assert unconfigured["metadata"] is None


# -- enable / config -------------------------------------------------------------------


def test_enable_writes_the_file_and_loads_the_plugin(server: RunningServer) -> None:
    response = server.client.patch("/v0/management/plugins/http-c/enabled", json={"enabled": True})
    assert response.status_code == 200, response.text
    assert response.json()["registered"] is True
    text = server.service.config_path.read_text()
    assert "http-c:" in text
    assert "# top comment: kept" in text
    response = server.client.patch(
        "/v0/management/plugins/simple-c/enabled", json={"enabled": False}
    )
    assert response.json()["registered"] is False
    assert "simple-c" not in [i.id for i in server.service.host.plugins() if i.registered]


@pytest.mark.parametrize("body", [{"enabled": "yes"}, {"enabled": 1}, {}, {"on": True}])
def test_enable_refuses_a_body_that_is_not_a_boolean(server: RunningServer, body: Any) -> None:
    before = server.service.config_path.read_bytes()
    response = server.client.patch("/v0/management/plugins/simple-c/enabled", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_body"
    assert server.service.config_path.read_bytes() == before


def test_get_config_answers_the_plugins_mapping(server: RunningServer) -> None:
    response = server.client.get("/v0/management/plugins/simple-c/config")
    assert response.json() == {"enabled": True, "priority": 10, "mode": "safe"}
    assert server.client.get("/v0/management/plugins/http-c/config").json() == {}


def test_patch_config_merges_keeps_comments_and_reconfigures(server: RunningServer) -> None:
    response = server.client.patch(
        "/v0/management/plugins/simple-c/config", json={"mode": "fast", "extra": 1}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"enabled": True, "priority": 10, "mode": "fast", "extra": 1}
    text = server.service.config_path.read_text()
    for kept in (
        "# top comment: kept",
        "# master switch",
        "# the C example",
        "# runs after rust",
        "other-app:",
        "keep: me",
        "# belongs to another program",
    ):
        assert kept in text
    out = server.service.host.call("simple-c", "executor.execute", {"Model": "m", "Payload": ""})
    assert json.loads(base64.b64decode(out["Payload"]))["mode"] == "fast"
    response = server.client.patch("/v0/management/plugins/simple-c/config", json={"extra": None})
    assert "extra" not in response.json()


def test_put_config_replaces_the_mapping(server: RunningServer) -> None:
    response = server.client.put(
        "/v0/management/plugins/simple-c/config",
        json={"enabled": True, "priority": 3, "mode": "fast"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"enabled": True, "priority": 3, "mode": "fast"}
    listing = server.client.get("/v0/management/plugins").json()
    assert plugin(listing, "simple-c")["priority"] == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "turbo"}, "plugins.configs.simple-c.mode"),
        ({"mode": 3}, "plugins.configs.simple-c.mode"),
        ({"priority": "high"}, "plugins.configs.simple-c.priority"),
        ({"priority": 1.5}, "plugins.configs.simple-c.priority"),
        ({"enabled": "true"}, "plugins.configs.simple-c.enabled"),
    ],
)
@pytest.mark.parametrize("verb", ["PUT", "PATCH"])
def test_invalid_config_is_refused_naming_the_field_and_nothing_is_written(
    server: RunningServer, body: dict[str, Any], field: str, verb: str
) -> None:
    before = server.service.config_path.read_bytes()
    response = server.client.request(verb, "/v0/management/plugins/simple-c/config", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_config"
    assert field in response.json()["message"]
    assert server.service.config_path.read_bytes() == before


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"'])
def test_config_body_must_be_a_json_object(server: RunningServer, raw: bytes) -> None:
    response = server.client.put(
        "/v0/management/plugins/simple-c/config",
        content=raw,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_body"


def test_concurrent_patches_are_serialised_and_none_is_lost(server: RunningServer) -> None:
    def patch(n: int) -> None:
        for i in range(5):
            r = server.client.patch("/v0/management/plugins/http-c/config", json={f"k{n}_{i}": i})
            assert r.status_code == 200, r.text

    threads = [threading.Thread(target=patch, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    config = server.client.get("/v0/management/plugins/http-c/config").json()
    assert {k for k in config if k.startswith("k")} == {
        f"k{n}_{i}" for n in range(4) for i in range(5)
    }


# -- delete ------------------------------------------------------------------------------


def test_delete_unloads_removes_the_file_and_the_config_entry(server: RunningServer) -> None:
    path = Path(plugin(server.client.get("/v0/management/plugins").json(), "simple-c")["path"])
    response = server.client.delete("/v0/management/plugins/simple-c")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": "simple-c",
        "deleted_files": [str(path)],
        "config_removed": True,
    }
    assert not path.exists()
    assert "simple-c:" not in server.service.config_path.read_text()
    assert "# top comment: kept" in server.service.config_path.read_text()
    assert server.client.get("/v0/management/plugins/simple-c/config").status_code == 404


@pytest.mark.parametrize("pid", ["..", "..%2F..%2Fetc%2Fpasswd", "%2E%2E", "-x", "a" * 129])
def test_path_traversal_ids_are_refused(server: RunningServer, pid: str) -> None:
    response = server.client.delete(f"/v0/management/plugins/{pid}")
    assert response.status_code in (400, 404)
    assert all(p.exists() for p in server.service.config.plugins_dir().rglob("*" + LIBRARY_SUFFIX))


def test_delete_never_follows_a_symlinked_directory_out_of_the_plugins_dir(
    examples: dict[str, Path], tmp_path: Path
) -> None:
    outside = tmp_path / "outside" / "amd64"
    outside.mkdir(parents=True)
    victim = outside / f"victim{LIBRARY_SUFFIX}"
    victim.write_bytes(examples["simple-c"].read_bytes())
    root = tmp_path / "site"
    (root / "plugins").mkdir(parents=True)
    (root / "plugins" / "linux").symlink_to(tmp_path / "outside", target_is_directory=True)
    config = root / "config.yaml"
    config.write_text("plugins:\n  enabled: true\n  configs:\n    victim: {enabled: false}\n")
    with run_server(config) as running:
        running.service.wait_ready(30)
        response = running.client.delete("/v0/management/plugins/victim")
        assert response.status_code == 200, response.text
        assert response.json()["deleted_files"] == []
    assert victim.exists()


def test_unknown_plugin_is_404(server: RunningServer) -> None:
    for method, path in [
        ("GET", "/config"),
        ("PUT", "/config"),
        ("PATCH", "/config"),
        ("PATCH", "/enabled"),
        ("DELETE", ""),
    ]:
        body = {"enabled": True} if path == "/enabled" else {}
        response = server.client.request(
            method, f"/v0/management/plugins/ghost{path}", json=body if method != "GET" else None
        )
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == "plugin_not_found"


def test_a_plugin_that_is_still_loading_is_busy(
    compile_plugin: CompilePlugin, host_factory: HostFactory
) -> None:
    host_factory.add("slow", compile_plugin(TP_REGISTER_SLEEP_MS=3000))
    host_factory.write_config(configs={"slow": {"enabled": True}})
    with run_server(host_factory.config_path) as running:
        # The API answers while the plugin is still registering.
        listing = running.client.get("/v0/management/plugins").json()
        assert plugin(listing, "slow")["loading"] is True
        response = running.client.patch("/v0/management/plugins/slow/config", json={"x": 1})
        assert response.status_code == 409
        assert response.json()["error"] == "plugin_busy"
        running.service.wait_ready(30)
        assert plugin(running.client.get("/v0/management/plugins").json(), "slow")["registered"]


# -- auth ----------------------------------------------------------------------------------


def test_every_route_requires_the_key(server: RunningServer) -> None:
    for method, path in [
        ("GET", "/v0/management/plugins"),
        ("DELETE", "/v0/management/plugins/simple-c"),
        ("PATCH", "/v0/management/plugins/simple-c/enabled"),
        ("GET", "/v0/management/plugins/simple-c/config"),
        ("PUT", "/v0/management/plugins/simple-c/config"),
        ("PATCH", "/v0/management/plugins/simple-c/config"),
        ("GET", "/v0/management/simple-c/status"),
        ("GET", "/v0/resource/plugins/simple-c/index.html"),
    ]:
        response = server.anonymous.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"] == "missing_management_key"
    assert Path(
        plugin(server.client.get("/v0/management/plugins").json(), "simple-c")["path"]
    ).exists()


def test_the_key_is_accepted_in_either_header(server: RunningServer) -> None:
    ok = server.anonymous.get(
        "/v0/management/plugins", headers={"X-Management-Key": "test-management-key"}
    )
    assert ok.status_code == 200


def test_repeated_wrong_keys_are_slowed_down(server: RunningServer) -> None:
    statuses = []
    for _ in range(7):
        response = server.anonymous.get(
            "/v0/management/plugins", headers={"Authorization": "Bearer wrong-key-123"}
        )
        statuses.append(response.status_code)
        assert "wrong-key-123" not in response.text
    assert statuses[0] == 401
    assert statuses[-1] == 429
    assert int(response.headers["Retry-After"]) >= 1


# -- plugin-owned routes and resources ----------------------------------------------------


def test_plugin_routes_and_resources_are_served_from_the_c_and_rust_examples(
    server: RunningServer,
) -> None:
    response = server.client.get("/v0/management/simple-c/status")
    assert response.status_code == 200
    assert response.json() == {
        "plugin": "simple-c",
        "mode": "safe",
        "path": "/v0/management/simple-c/status",
    }
    response = server.client.get("/v0/management/simple-rust/status", params={"q": "1"})
    assert response.json()["plugin"] == "simple-rust"
    page = server.client.get("/v0/resource/plugins/simple-rust/index.html")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "simple-rust" in page.text
    assert server.client.get("/v0/resource/plugins/simple-c/index.html").status_code == 200
    assert server.client.get("/v0/resource/plugins/simple-c/nope.html").status_code == 404
    assert server.client.get("/v0/management/nobody/here").status_code == 404


def test_plugin_routes_follow_enable_and_disable(server: RunningServer) -> None:
    server.client.patch("/v0/management/plugins/simple-c/enabled", json={"enabled": False})
    assert server.client.get("/v0/management/simple-c/status").status_code == 404
    server.client.patch("/v0/management/plugins/simple-c/enabled", json={"enabled": True})
    assert server.client.get("/v0/management/simple-c/status").status_code == 200


def _management_file(tmp_path: Path, name: str, routes: list[dict[str, str]]) -> Path:
    path = tmp_path / f"{name}-routes.json"
    path.write_text(json.dumps({"Routes": routes, "Resources": []}))
    return path


def _registration(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}-reg.json"
    path.write_text(
        json.dumps(
            {
                "metadata": {
                    "Name": name,
                    "Version": "1",
                    "Author": "t",
                    "GitHubRepository": "https://example.invalid",
                },
                "capabilities": {"management_api": True},
            }
        )
    )
    return path


def test_route_conflicts_go_to_the_host_then_the_higher_priority_plugin(
    compile_plugin: CompilePlugin,
    host_factory: HostFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    routes = [
        {"Method": "GET", "Path": "/plugins"},  # the host's own list route
        {"Method": "GET", "Path": "/shared"},
        {"Method": "GET", "Path": "/bad/:id"},
        {"Method": "GET", "Path": "/../escape"},
    ]
    for name in ("high", "low"):
        host_factory.add(
            name,
            compile_plugin(
                TP_NAME=name,
                TP_REGISTRATION_FILE=_registration(tmp_path, name),
                TP_MANAGEMENT_FILE=_management_file(tmp_path, name, routes),
            ),
        )
    host_factory.write_config(
        configs={"high": {"enabled": True, "priority": 9}, "low": {"enabled": True, "priority": 1}}
    )
    with run_server(host_factory.config_path) as running:
        running.service.wait_ready(30)
        assert running.client.get("/v0/management/plugins").json()["plugins_enabled"] is True
        shared = running.client.get("/v0/management/shared")
        assert shared.status_code == 200
        assert shared.headers["X-Plugin"] == "high"
        assert running.client.get("/v0/management/bad/1").status_code == 404
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "collides with a host route" in messages
    assert "already served by plugin high" in messages
    assert "rejected" in messages


# -- OpenAPI -------------------------------------------------------------------------------


def test_openapi_documents_every_host_route(server: RunningServer) -> None:
    doc = server.anonymous.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) == {
        "/v0/management/plugins",
        "/v0/management/plugins/{plugin_id}",
        "/v0/management/plugins/{plugin_id}/enabled",
        "/v0/management/plugins/{plugin_id}/config",
        "/v0/management/plugins/{plugin_id}/file",
        "/v0/management/plugin-store",
        "/v0/management/plugin-store/{plugin_id}/install",
        "/v0/management/audit",
        "/metrics",
    }
    assert set(paths["/v0/management/plugins/{plugin_id}/config"]) == {"get", "put", "patch"}
    listing = paths["/v0/management/plugins"]["get"]["responses"]["200"]
    assert listing["content"]["application/json"]["schema"]["$ref"].endswith("PluginList")
    assert "ErrorBody" in doc["components"]["schemas"]
    assert server.anonymous.get("/docs").status_code == 200


def test_no_key_appears_in_logs(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    server.anonymous.get("/v0/management/plugins", headers={"X-Management-Key": "guess-1234"})
    server.client.get("/v0/management/plugins")
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "guess-1234" not in text
    assert "test-management-key" not in text
    assert os.environ.get("CLIPROXY_MANAGEMENT_KEY") is None


def test_a_plaintext_key_in_the_file_is_stored_hashed_at_start(
    host_factory: HostFactory,
) -> None:
    host_factory.config_path.write_text(
        "# keep me\nremote-management:\n  secret-key: plain-secret-123  # the key\n"
        "plugins:\n  enabled: true\n"
    )
    with run_server(host_factory.config_path) as running:
        running.service.wait_ready(30)
        text = host_factory.config_path.read_text()
    assert "plain-secret-123" not in text
    assert "secret-key: $2" in text
    assert "# keep me" in text
    assert "# the key" in text
