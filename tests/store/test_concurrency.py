"""50 installs and deletes of different versions at once: the config and the plugins dir
agree afterwards, and no reader ever sees a half-written file."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cliproxy_host.config import HostConfig

from ..conftest import HostFactory
from ..serverutil import run_server
from .conftest import EXT, VERSIONS, Store, store_config

IDS = ("c0", "c1", "c2", "c3", "c4")
OPS = 50
WATCH_LIMIT_S = 120.0


def _version_of(path: Path, plugin_id: str) -> str:
    return path.name.removeprefix(f"{plugin_id}-v").removesuffix(EXT)


def test_concurrent_installs_and_deletes_keep_the_config_and_files_consistent(
    store: Store, host_factory: HostFactory, libraries: dict[str, bytes]
) -> None:
    for plugin_id in IDS:
        store.direct(plugin_id)
    store_config(host_factory, [store.url], enabled=False)
    known = set(libraries.values())
    rng = random.Random(15)
    ops = [
        ("delete", rng.choice(IDS), "") if rng.random() < 0.3 else
        ("install", rng.choice(IDS), rng.choice(VERSIONS))
        for _ in range(OPS)
    ]  # fmt: skip
    torn: list[str] = []
    done = threading.Event()

    def watch() -> None:
        """Read what the host would read, while the requests run."""
        deadline = time.monotonic() + WATCH_LIMIT_S
        while not done.is_set() and time.monotonic() < deadline:
            try:
                HostConfig.load(host_factory.config_path)
            except Exception as exc:  # any failure is the finding
                torn.append(f"config: {exc}")
            for path in host_factory.arch_dir.glob(f"*{EXT}"):
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue  # deleted between the listing and the read
                if data not in known:
                    torn.append(f"{path.name}: {len(data)} bytes, not a whole library")
            time.sleep(0.005)

    with run_server(host_factory.config_path) as server:
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        def run(op: tuple[str, str, str]) -> tuple[tuple[str, str, str], int, str]:
            kind, plugin_id, version = op
            if kind == "delete":
                r = server.client.delete(f"/v0/management/plugins/{plugin_id}")
            else:
                r = server.client.post(
                    f"/v0/management/plugin-store/{plugin_id}/install", params={"version": version}
                )
            return op, r.status_code, r.json().get("error", "")

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(run, ops))
        done.set()
        watcher.join(timeout=10)
        in_memory = server.service.config

    for (kind, plugin_id, _), status, code in results:
        if kind == "install":
            assert status == 200, (plugin_id, status, code)
        else:
            assert (status, code) in ((200, ""), (404, "plugin_not_found")), (plugin_id, code)
    assert any(s == 200 for (k, _, _), s, _ in results if k == "delete")
    assert torn == []
    on_disk = HostConfig.load(host_factory.config_path)
    assert on_disk.model_dump() == in_memory.model_dump()
    leftovers = [p.name for p in host_factory.plugins_dir.rglob(".*")]
    assert leftovers == [], "temp files left behind"
    for plugin_id in IDS:
        files = sorted(host_factory.arch_dir.glob(f"{plugin_id}-v*{EXT}"))
        entry = on_disk.plugins.configs.get(plugin_id)
        if entry is None:
            assert files == [], f"{plugin_id}: files without a config entry"
            continue
        pinned = entry.pinned_version
        assert pinned is not None
        assert entry.enabled
        assert host_factory.arch_dir / f"{plugin_id}-v{pinned}{EXT}" in files
        for path in files:
            assert path.read_bytes() == libraries[_version_of(path, plugin_id)]
