"""`serve --config-store` with the database unreachable and no local copy: a clear refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from cliproxy_host.cli import EXIT_USAGE, main


def test_serve_refuses_to_start_without_the_database_or_a_local_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    with config.open("w", encoding="utf-8") as fh:
        YAML().dump({"plugins": {"dir": "plugins"}}, fh)
    down = "postgresql://u:secret@/none?host=/nonexistent-cliproxy-socket-dir"
    assert main(["serve", "--config", str(config), "--config-store", down]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "cannot reach the database" in error
    assert "no local copy" in error
    assert "secret" not in error, "the DSN's password is never shown"
