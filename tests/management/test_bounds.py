"""Sizes a client or a plugin controls on the management API have a cap and a typed answer:
request headers (count and bytes), and the routes, resources and menus a plugin registers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cliproxy_host.management.errors import ERROR_CODES
from cliproxy_host.management.plugin_routes import MAX_MENUS, MAX_RESOURCES, MAX_ROUTES
from cliproxy_host.web.header_limit import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_TARGET_BYTES,
)

from ..conftest import CompilePlugin, HostFactory
from ..serverutil import RunningServer, run_server

PLUGINS = "/v0/management/plugins"


@pytest.fixture
def server(examples: dict[str, Path], host_factory: HostFactory) -> Iterator[RunningServer]:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True}})
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        yield running


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error", "message"}
    assert ERROR_CODES[body["error"]].status == response.status_code
    return response.status_code, body["error"], body["message"]


def padding(count: int, client: httpx.Client) -> dict[str, str]:
    """Extra headers that bring a request of `client` to `count` headers in all."""
    base = len(client.build_request("GET", PLUGINS).headers)
    return {f"X-Pad-{i}": "1" for i in range(count - base)}


# -- request headers -----------------------------------------------------------------------


def test_one_header_too_many_is_431_naming_the_limit(server: RunningServer) -> None:
    response = server.client.get(PLUGINS, headers=padding(MAX_HEADERS + 1, server.client))
    status, code, message = error_of(response)
    assert (status, code) == (431, "headers_too_large")
    assert f"{MAX_HEADERS + 1} headers" in message
    assert f"at most {MAX_HEADERS}" in message


def test_the_most_headers_allowed_are_taken(server: RunningServer) -> None:
    response = server.client.get(PLUGINS, headers=padding(MAX_HEADERS, server.client))
    assert response.status_code == 200


def test_headers_over_the_byte_cap_are_431_with_the_json_body(server: RunningServer) -> None:
    response = server.client.get(PLUGINS, headers={"X-Big": "x" * MAX_HEADER_BYTES})
    status, code, message = error_of(response)
    assert (status, code) == (431, "headers_too_large")
    assert f"at most {MAX_HEADER_BYTES} bytes" in message


def test_headers_just_under_the_byte_cap_are_taken(server: RunningServer) -> None:
    response = server.client.get(PLUGINS, headers={"X-Big": "x" * (MAX_HEADER_BYTES - 1024)})
    assert response.status_code == 200


def test_the_header_cap_answers_before_the_key_is_checked(server: RunningServer) -> None:
    response = server.anonymous.get(PLUGINS, headers=padding(MAX_HEADERS + 1, server.anonymous))
    assert error_of(response)[:2] == (431, "headers_too_large")


def test_every_host_route_declares_414_and_431(server: RunningServer) -> None:
    document: dict[str, Any] = server.anonymous.get("/openapi.json").json()
    for item in document["paths"].values():
        for operation in item.values():
            assert {"414", "431"} <= set(operation["responses"])


# -- the URL -------------------------------------------------------------------------------


def target_of_length(path: str, length: int) -> str:
    head = f"{path}?pad="
    return head + "x" * (length - len(head))


@pytest.mark.parametrize("path", [PLUGINS, "/v0/management/nobody-serves-this"])
def test_a_url_over_the_cap_is_414_and_not_echoed(server: RunningServer, path: str) -> None:
    response = server.client.get(target_of_length(path, MAX_TARGET_BYTES + 1))
    status, code, message = error_of(response)
    assert (status, code) == (414, "uri_too_long")
    assert f"at most {MAX_TARGET_BYTES}" in message
    assert len(message) < 200


def test_a_long_path_without_a_query_is_414_too(server: RunningServer) -> None:
    response = server.client.get("/v0/management/" + "a" * MAX_TARGET_BYTES)
    assert error_of(response)[:2] == (414, "uri_too_long")


def test_a_url_at_the_cap_is_taken(server: RunningServer) -> None:
    assert server.client.get(target_of_length(PLUGINS, MAX_TARGET_BYTES)).status_code == 200


# -- what a plugin registers ------------------------------------------------------------


def _write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def test_routes_resources_and_menus_over_the_cap_are_refused_naming_the_plugin(
    compile_plugin: CompilePlugin,
    host_factory: HostFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    extra = 10
    routes = [
        {"Method": "GET", "Path": f"/r{i}", "Menu": f"r{i}"} for i in range(MAX_ROUTES + extra)
    ]
    resources = [{"Path": f"/s{i}", "Menu": f"s{i}"} for i in range(MAX_RESOURCES + extra)]
    registration = {
        "metadata": {"Name": "greedy", "Version": "1", "Author": "t", "GitHubRepository": "x"},
        "capabilities": {"management_api": True},
    }
    library = compile_plugin(
        TP_NAME="greedy",
        TP_REGISTRATION_FILE=_write_json(tmp_path / "reg.json", registration),
        TP_MANAGEMENT_FILE=_write_json(
            tmp_path / "routes.json", {"Routes": routes, "Resources": resources}
        ),
    )
    host_factory.add("greedy", library)
    host_factory.write_config(configs={"greedy": {"enabled": True}})
    caplog.set_level(logging.WARNING, logger="cliproxy_host.management.plugin_routes")
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        get = running.client.get
        assert get(f"/v0/management/r{MAX_ROUTES - 1}").status_code == 200
        assert get(f"/v0/management/r{MAX_ROUTES}").status_code == 404
        resource = "/v0/resource/plugins/greedy/s"
        assert get(f"{resource}{MAX_RESOURCES - 1}").status_code == 200
        assert get(f"{resource}{MAX_RESOURCES}").status_code == 404
        (entry,) = get(PLUGINS).json()["plugins"]
        assert len(entry["menus"]) == MAX_MENUS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for what, given, cap in (
        ("routes", MAX_ROUTES + extra, MAX_ROUTES),
        ("resources", MAX_RESOURCES + extra, MAX_RESOURCES),
        ("menus", MAX_ROUTES + MAX_RESOURCES, MAX_MENUS),
    ):
        wanted = f"plugin greedy: management.register answered {given} {what}; only the first {cap}"
        assert any(w.startswith(wanted) for w in warnings), (wanted, warnings)


def test_a_plugin_routes_answer_over_max_response_bytes_is_a_502_not_served(
    compile_plugin: CompilePlugin, host_factory: HostFactory, tmp_path: Path
) -> None:
    # management.handle answers X-Plugin: <TP_NAME>: a long name makes its answer larger
    # than the cap, while the registration answers stay under it.
    cap = 400
    registration = {
        "metadata": {"Name": "big", "Version": "1", "Author": "t", "GitHubRepository": "x"},
        "capabilities": {"management_api": True},
    }
    library = compile_plugin(
        TP_NAME="n" * cap,
        TP_REGISTRATION_FILE=_write_json(tmp_path / "reg.json", registration),
        TP_MANAGEMENT_FILE=_write_json(
            tmp_path / "routes.json", {"Routes": [{"Path": "/big"}], "Resources": []}
        ),
    )
    host_factory.add("big", library)
    host_factory.write_config(configs={"big": {"enabled": True, "max_response_bytes": cap}})
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        status, code, message = error_of(running.client.get("/v0/management/big"))
    assert (status, code) == (502, "plugin_error")
    assert f"max_response_bytes ({cap})" in message
