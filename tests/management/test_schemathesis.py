"""Property-based run of schemathesis against the live management API: no input gives a 5xx."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import HostFactory
from ..serverutil import KEY, run_server

# Bounded so that the whole run stays well under a minute on two cores.
MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25")


def test_no_generated_request_gets_a_server_error(
    examples: dict[str, Path], host_factory: HostFactory, tmp_path: Path
) -> None:
    exe = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(exe).exists():
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    for pid in ("simple-c", "simple-rust"):
        host_factory.add(pid, examples[pid])
    host_factory.write_config(
        configs={"simple-c": {"enabled": True, "mode": "safe"}, "simple-rust": {"enabled": True}}
    )
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        done = subprocess.run(
            [
                exe,
                "run",
                f"{running.base_url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                MAX_EXAMPLES,
                "--header",
                f"Authorization: Bearer {KEY}",
                "--seed",
                "1",
                "--report-dir",
                str(tmp_path / "report"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
