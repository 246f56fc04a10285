"""Real servers for the console's tests: the simple-c example (a menu, a resource, an enum
setting) and the C test plugin registering a logo and a field of every ConfigField type;
and the test plugin beside a loopback store offering `sp` (the store, metrics and audit views)."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import CompilePlugin, HostFactory
from ..serverutil import RunningServer, run_server

# The store's test world (its libraries and loopback registry), shared as fixtures.
from ..store.conftest import Store, libraries, store, store_config

__all__ = ["libraries", "store"]

MISSING = "/missing/registry.json"  # a second store source, which answers 404
CLIENT_KEY = "client-key-never-shown"  # a client key the log tail must mask

# The comments the config file starts with; every save must keep them.
CONFIG_HEAD = "# operator's note: kept across console saves\n"
ENTRY_COMMENT = "    # knobs: tuned by hand\n"
KNOBS_FIELDS = [
    {"Name": "label", "Type": "string", "Description": "Shown in answers"},
    {"Name": "retries", "Type": "integer", "Description": "How often to retry (a whole number)"},
    {"Name": "ratio", "Type": "number", "Description": "Share of calls sampled"},
    {"Name": "verbose", "Type": "boolean", "Description": "Log every call"},
    {"Name": "level", "Type": "enum", "EnumValues": ["low", "high"], "Description": "Effort"},
    {"Name": "tags", "Type": "array", "Description": "Tags, as a JSON array"},
]


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, so that the test plugin's logo needs no file from elsewhere."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


LOGO = "data:image/png;base64," + base64.b64encode(png(16, 16, (11, 87, 176))).decode()


def _write_json(path: Path, value: Any) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def knobs_plugin(compile_plugin: CompilePlugin, tmp_path: Path) -> Path:
    registration = {
        "schema_version": 1,
        "metadata": {
            "Name": "knobs",
            "Version": "2.1.0",
            "Author": "tests",
            "GitHubRepository": "https://example.invalid/knobs",
            "Logo": LOGO,
            "ConfigFields": KNOBS_FIELDS,
        },
        "capabilities": {"management_api": True},
    }
    management = {
        "Routes": [
            {"Method": "GET", "Path": "/knobs/status", "Menu": "Knobs status"},
            {"Method": "POST", "Path": "/knobs/reset", "Menu": "Reset knobs"},
        ],
        "Resources": [{"Path": "/panel.html"}],
    }
    return compile_plugin(
        TP_NAME="knobs",
        TP_WITH_SHUTDOWN=True,
        TP_REGISTRATION_FILE=_write_json(tmp_path / "knobs-registration.json", registration),
        TP_MANAGEMENT_FILE=_write_json(tmp_path / "knobs-management.json", management),
    )


def write_config(host_factory: HostFactory) -> Path:
    """The config with comments above the file and above a plugin's keys."""
    path = host_factory.config_path
    path.write_text(
        CONFIG_HEAD + "plugins:\n"
        "  enabled: true\n"
        "  dir: plugins\n"
        "  configs:\n"
        "    simple-c:\n"
        "      enabled: true\n"
        "      mode: safe\n"
        "    knobs:\n"
        "      enabled: true\n" + ENTRY_COMMENT + "      retries: 3\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def console_server(
    examples: dict[str, Path],
    compile_plugin: CompilePlugin,
    host_factory: HostFactory,
    tmp_path: Path,
) -> Iterator[RunningServer]:
    host_factory.add("simple-c", examples["simple-c"])
    host_factory.add("knobs", knobs_plugin(compile_plugin, tmp_path))
    with run_server(write_config(host_factory)) as running:
        assert running.service.wait_ready(30)
        yield running


@pytest.fixture
def views_server(
    store: Store, host_factory: HostFactory, testplugin: Path
) -> Iterator[RunningServer]:
    """The test plugin loaded as `tp`; the store offers `sp`; a second source is missing."""
    store.direct("sp")
    host_factory.add("tp", testplugin)
    store_config(
        host_factory,
        [store.url, store.server.url(MISSING)],
        configs={"tp": {"enabled": True}},
    )
    with host_factory.config_path.open("a", encoding="utf-8") as fh:
        fh.write(f"api-keys:\n  - {CLIENT_KEY}\n")
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        yield running
