"""The audit log's file: appended JSON lines, rotation bounded in size and count, paging."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from cliproxy_host.config import ConfigError, HostConfig
from cliproxy_host.observe.audit import AuditLog, config_digest, key_fingerprint


def write(trail: AuditLog, n: int, plugin: str = "p", pad: int = 200) -> list[dict[str, Any]]:
    return [
        trail.record(
            action="config.patch",
            route=f"PATCH /v0/management/plugins/{plugin}/config",
            plugin=plugin,
            client="127.0.0.1",
            key=key_fingerprint("k"),
            config_before="a" * 64,
            config_after="b" * 64,
            detail="x" * pad,
        )
        for _ in range(n)
    ]


def test_the_log_rotates_by_size_and_keeps_only_max_files(tmp_path: Path) -> None:
    trail = AuditLog(tmp_path / "audit.jsonl", max_bytes=4096, max_files=2)
    write(trail, 100)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for path in tmp_path.iterdir():
        assert 0 < path.stat().st_size <= 4096
    # Every line is a whole entry, and the files hold the newest entries without a gap.
    seqs = [
        orjson.loads(line)["seq"]
        for name in ("audit.jsonl.2", "audit.jsonl.1", "audit.jsonl")
        for line in (tmp_path / name).read_bytes().splitlines()
    ]
    assert seqs == list(range(seqs[0], 101))
    assert seqs[0] > 1  # the oldest were dropped


def test_pages_go_newest_first_to_the_end_without_gaps(tmp_path: Path) -> None:
    trail = AuditLog(tmp_path / "audit.jsonl", max_bytes=4096, max_files=10)
    write(trail, 30, plugin="a")
    write(trail, 5, plugin="b")
    page = trail.page(limit=4)
    assert [e["seq"] for e in page.entries] == [35, 34, 33, 32]
    seen, before = [], None
    for _ in range(100):
        page = trail.page(plugin="a", before=before, limit=7)
        seen += [e["seq"] for e in page.entries]
        assert {e["plugin"] for e in page.entries} <= {"a"}
        if page.next is None:
            break
        before = page.next
    assert seen == list(range(30, 0, -1))


def test_numbering_goes_on_after_a_restart_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(AuditLog(path, max_bytes=1 << 20, max_files=2), 3)
    with path.open("ab") as fh:
        fh.write(b'{"seq": 4, "act')  # a crash in the middle of a line
    trail = AuditLog(path, max_bytes=1 << 20, max_files=2)
    assert write(trail, 1)[0]["seq"] == 4
    assert [e["seq"] for e in trail.page().entries] == [4, 3, 2, 1]


def test_concurrent_writers_get_distinct_numbers_and_whole_lines(tmp_path: Path) -> None:
    trail = AuditLog(tmp_path / "audit.jsonl", max_bytes=1 << 20, max_files=2)
    workers = [threading.Thread(target=write, args=(trail, 25)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines()
    assert sorted(orjson.loads(line)["seq"] for line in lines) == list(range(1, 101))


def test_a_fingerprint_is_not_the_key_and_a_digest_is_the_files(tmp_path: Path) -> None:
    key = "a-long-management-key"
    print_ = key_fingerprint(key)
    assert print_ is not None
    assert len(print_) == 16
    assert key not in print_
    assert key_fingerprint(None) is None
    config = tmp_path / "config.yaml"
    assert config_digest(config) is None
    config.write_text("plugins: {}\n")
    first = config_digest(config)
    config.write_text("plugins: {enabled: true}\n")
    assert config_digest(config) not in (None, first)


def test_the_audit_keys_have_defaults_and_bounds(tmp_path: Path) -> None:
    config = HostConfig.from_mapping({})
    assert (config.audit.enabled, config.audit.max_bytes, config.audit.max_files) == (
        True,
        4 * 1024 * 1024,
        5,
    )
    assert config.audit_path() == Path.cwd() / "audit.jsonl"
    with pytest.raises(ConfigError, match=r"audit\.max-files"):
        HostConfig.from_mapping({"audit": {"max-files": 0}})
    with pytest.raises(ConfigError, match=r"audit\.max-bytes"):
        HostConfig.from_mapping({"audit": {"max-bytes": 10}})
