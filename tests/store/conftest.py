"""The store's test world: real test-plugin libraries, zips of them, a registry server on
loopback and a management server whose config lists it."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from ruamel.yaml import YAML

from cliproxy_host.discovery import library_suffix, platform_tag

from ..conftest import CompilePlugin, HostFactory
from .registry_server import StoreServer, store_server

GOOS, GOARCH = platform_tag()
EXT = library_suffix(GOOS)
VERSIONS = ("1.0.0", "1.1.0", "2.0.0")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_of(entries: Mapping[str, bytes], *, symlinks: Mapping[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100755 << 16
            archive.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, target)
    return buf.getvalue()


@dataclass
class Store:
    """One registry on the store server, and the bytes it offers."""

    server: StoreServer
    libraries: dict[str, bytes]  # version -> library bytes
    registry_path: str = "/registry.json"
    plugins: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url(self.registry_path)

    def publish(self) -> None:
        body = orjson.dumps({"schema_version": 2, "plugins": self.plugins})
        self.server.put(self.registry_path, body, content_type="application/json")

    def direct(
        self,
        plugin_id: str,
        versions: tuple[str, ...] = VERSIONS,
        *,
        archive: dict[str, bytes] | None = None,
        sha: str | None = None,
        size: int | None = None,
    ) -> dict[str, Any]:
        """A direct entry offering `versions` (the last is the entry's own); `archive`,
        `sha` and `size` override what the first version serves and declares."""
        entries = []
        for index, version in enumerate(versions):
            data = zip_of({f"{plugin_id}{EXT}": self.libraries[version]})
            if index == 0 and archive is not None:
                data = zip_of(archive)
            path = f"/{plugin_id}/{version}/{plugin_id}_{version}_{GOOS}_{GOARCH}.zip"
            url = self.server.put(path, data)
            artifact = {
                "goos": GOOS,
                "goarch": GOARCH,
                "url": url,
                "sha256": sha if (index == 0 and sha) else sha256(data),
                "size": size if (index == 0 and size is not None) else len(data),
            }
            entries.append(
                {"version": version, "install": {"type": "direct", "artifacts": [artifact]}}
            )
        latest = entries[-1]
        plugin = {
            "id": plugin_id,
            "name": plugin_id.title(),
            "description": f"{plugin_id}, a test plugin",
            "author": "tests",
            "version": latest["version"],
            "install": latest["install"],
            "versions": entries[:-1],
            "tags": ["test"],
        }
        self.plugins.append(plugin)
        self.publish()
        return plugin


@pytest.fixture(scope="session")
def libraries(compile_plugin: CompilePlugin) -> dict[str, bytes]:
    """A test-plugin library per version, each with its own bytes (its TP_NAME)."""
    return {
        v: compile_plugin(TP_WITH_SHUTDOWN=True, TP_NAME=f"store-{v}").read_bytes()
        for v in VERSIONS
    }


@pytest.fixture
def store(libraries: dict[str, bytes]) -> Iterator[Store]:
    with store_server() as server:
        yield Store(server, libraries)


def store_config(
    host_factory: HostFactory, sources: list[str], *, enabled: bool = True, **plugins: Any
) -> Path:
    """A config listing `sources` (not the official one: tests stay on loopback)."""
    section: dict[str, Any] = {
        "enabled": enabled,
        "dir": "plugins",
        "store-sources": sources,
        "store-official": False,
        "store-timeout-seconds": 5,
    }
    section.update({k.replace("_", "-"): v for k, v in plugins.items()})
    with host_factory.config_path.open("w", encoding="utf-8") as fh:
        YAML().dump({"plugins": section}, fh)
    return host_factory.config_path


def disk_state(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones too) with its sha256: what a refusal must keep."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = sha256(path.read_bytes())
    return out
