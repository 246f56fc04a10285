"""What the management API answers to requests it cannot take: too large, not JSON, the
wrong Content-Type, too deep, the wrong method; every code documented, in one place."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cliproxy_host.management.errors import ERROR_CODES
from cliproxy_host.management.json_body import MAX_DEPTH

from ..conftest import HostFactory
from ..serverutil import KEY, RunningServer, run_server

CONFIG = "/v0/management/plugins/simple-c/config"
MIB = 1024 * 1024


@pytest.fixture
def server(examples: dict[str, Path], host_factory: HostFactory) -> Iterator[RunningServer]:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True, "mode": "safe"}})
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        yield running


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error", "message"}
    assert body["error"] in ERROR_CODES, f"undocumented code {body['error']}"
    assert ERROR_CODES[body["error"]].status == response.status_code
    return response.status_code, body["error"], body["message"]


def json_body_of_size(size: int) -> bytes:
    """A JSON object of exactly `size` bytes, most of them blanks: its value stays within
    the config's limits (a string of at most MAX_STRING_CHARS characters)."""
    head, tail = b'{"enabled": true, "blob": "' + b"x" * 100 + b'"', b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


# -- the body cap ------------------------------------------------------------------------


def test_a_body_over_the_cap_with_content_length_is_413_and_nothing_is_written(
    server: RunningServer,
) -> None:
    before = server.service.config_path.read_bytes()
    body = json_body_of_size(MIB + 1)
    response = server.client.patch(
        CONFIG, content=body, headers={"Content-Type": "application/json"}
    )
    status, code, message = error_of(response)
    assert (status, code) == (413, "body_too_large")
    assert str(MIB) in message
    assert "remote-management.max-body-bytes" in message
    assert server.service.config_path.read_bytes() == before


def test_a_chunked_body_over_the_cap_is_413_and_nothing_is_written(
    server: RunningServer,
) -> None:
    before = server.service.config_path.read_bytes()
    body = json_body_of_size(MIB + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = server.client.put(
        CONFIG, content=chunks(), headers={"Content-Type": "application/json"}
    )
    status, code, _ = error_of(response)
    assert (status, code) == (413, "body_too_large")
    assert server.service.config_path.read_bytes() == before


def test_a_body_at_the_cap_is_taken(server: RunningServer) -> None:
    response = server.client.put(
        CONFIG, content=json_body_of_size(MIB), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text[:300]


def test_the_cap_is_read_from_the_config(
    examples: dict[str, Path], host_factory: HostFactory
) -> None:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.write_config(configs={"simple-c": {"enabled": True}})
    with host_factory.config_path.open("a", encoding="utf-8") as fh:
        fh.write("remote-management:\n  max-body-bytes: 2000\n")
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        # `enabled` said: a PUT leaving it out would disable simple-c, which is refused.
        small = running.client.put(CONFIG, json={"enabled": True, "mode": "fast"})
        assert small.status_code == 200, small.text
        big = running.client.put(CONFIG, json={"mode": "x" * 2000})
        assert error_of(big)[:2] == (413, "body_too_large")
        assert "2000" in error_of(big)[2]


# -- bodies that are not what a host route takes --------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_wrong_content_type_is_415_saying_which_to_send(
    server: RunningServer, content_type: str
) -> None:
    before = server.service.config_path.read_bytes()
    response = server.client.put(
        CONFIG, content=b'{"mode": "fast"}', headers={"Content-Type": content_type}
    )
    status, code, message = error_of(response)
    assert (status, code) == (415, "unsupported_media_type")
    assert "send Content-Type: application/json" in message
    assert content_type in message
    assert server.service.config_path.read_bytes() == before


@pytest.mark.parametrize("raw", [b"not json", b'{"mode": ', b"\xff\xfe{}"])
def test_a_body_that_is_not_json_says_where_and_what_to_send(
    server: RunningServer, raw: bytes
) -> None:
    response = server.client.put(CONFIG, content=raw, headers={"Content-Type": "application/json"})
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_body")
    assert "not valid JSON" in message
    assert "send a JSON object" in message


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH, 100, 100_000])
def test_a_body_nested_too_deep_is_refused_naming_the_limit(
    server: RunningServer, depth: int
) -> None:
    before = server.service.config_path.read_bytes()
    raw = b'{"deep": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    response = server.client.put(CONFIG, content=raw, headers={"Content-Type": "application/json"})
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_body")
    assert f"at most {MAX_DEPTH} levels" in message
    assert server.service.config_path.read_bytes() == before


def test_a_body_at_the_depth_limit_is_taken(server: RunningServer) -> None:
    # The object itself is the first level.
    response = server.client.put(CONFIG, json={"enabled": True, "deep": nested(MAX_DEPTH - 1)})
    assert response.status_code == 200, response.text


# -- methods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/v0/management/plugins", "GET"),
        ("PUT", "/v0/management/plugins/simple-c", "DELETE"),
        ("POST", CONFIG, "GET, PATCH, PUT"),
        ("GET", "/v0/management/plugins/simple-c/enabled", "PATCH"),
        ("POST", "/v0/management/simple-c/status", "GET"),
        ("POST", "/v0/resource/plugins/simple-c/index.html", "GET, HEAD"),
        ("TRACE", "/v0/management/plugins", "GET"),
    ],
)
def test_a_wrong_method_is_405_with_allow(
    server: RunningServer, method: str, path: str, allow: str
) -> None:
    response = server.client.request(method, path)
    status, code, message = error_of(response)
    assert (status, code) == (405, "method_not_allowed")
    assert response.headers["Allow"] == allow
    assert f"use {allow}" in message


def test_a_path_nobody_serves_is_still_404(server: RunningServer) -> None:
    assert error_of(server.client.post("/v0/management/nobody/here"))[:2] == (404, "not_found")


# -- the OpenAPI document ------------------------------------------------------------------


@pytest.fixture
def openapi(server: RunningServer) -> dict[str, Any]:
    document: dict[str, Any] = server.client.get("/openapi.json").json()
    return document


def operations(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in document["paths"].values():
        yield from item.values()


def test_plugin_id_declares_the_id_pattern(openapi: dict[str, Any]) -> None:
    params = [
        p for op in operations(openapi) for p in op.get("parameters", []) if p["in"] == "path"
    ]
    assert params
    for param in params:
        assert param["name"] == "plugin_id"
        assert param["schema"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def test_the_management_key_schemes_are_declared_and_applied(openapi: dict[str, Any]) -> None:
    schemes = openapi["components"]["securitySchemes"]
    by_type = {s["type"]: s for s in schemes.values()}
    assert by_type["http"]["scheme"] == "bearer"
    assert (by_type["apiKey"]["in"], by_type["apiKey"]["name"]) == ("header", "X-Management-Key")
    names = sorted(schemes)
    for op in operations(openapi):
        assert sorted(name for req in op["security"] for name in req) == names


def test_every_error_response_is_the_one_error_body_with_every_code(
    openapi: dict[str, Any],
) -> None:
    schema = openapi["components"]["schemas"]["ErrorBody"]
    assert schema["properties"]["error"]["enum"] == sorted(ERROR_CODES)
    for op in operations(openapi):
        errors = {s: r for s, r in op["responses"].items() if int(s) >= 400 and s != "422"}
        assert errors
        for response in errors.values():
            ref = response["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorBody"
        # FastAPI's own validation error shape is never answered: invalid_body is.
        assert "422" not in op["responses"]


def test_body_routes_declare_413_and_415(openapi: dict[str, Any]) -> None:
    for op in operations(openapi):
        if "requestBody" in op:
            assert {"413", "415"} <= set(op["responses"])


# -- the README's table --------------------------------------------------------------------


def test_the_readme_lists_every_code_with_its_status() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- management-errors -->")
    end = readme.index("<!-- end management-errors -->")
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in readme[start:end].splitlines()
        if line.startswith("| `")
    ]
    documented = {row[0].strip("`"): int(row[1]) for row in rows}
    assert documented == {code: c.status for code, c in ERROR_CODES.items()}
    assert all(row[2] for row in rows)


def test_json_helper_builds_what_it_says() -> None:
    assert len(json_body_of_size(1000)) == 1000
    assert json.loads(json_body_of_size(1000))["blob"]


def test_an_oversized_content_length_is_answered_before_any_body_is_sent(
    server: RunningServer,
) -> None:
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"PUT {CONFIG} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {MIB + 1}\r\n\r\n".encode()
        )
        # Not one byte of the body is sent: the answer must come anyway, then the close.
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"body_too_large"' in answer
