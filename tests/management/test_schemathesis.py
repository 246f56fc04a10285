"""Property-based run of schemathesis against the live management API: no input gives a 5xx.

Always against a throwaway dir (tmp_path). By default the run is non-destructive: the reads
are fuzzed with every kind of input, the writes with invalid inputs only, DELETE never, and
the config and the plugin files must come out unchanged. `SCHEMATHESIS_DESTRUCTIVE=1` fuzzes
every operation with every input, DELETE included: given the key, a stateful run that
deletes every plugin is doing what an authorised client may do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from ..conftest import HostFactory
from ..serverutil import KEY, run_server

# Bounded so that the whole run stays well under a minute on two cores.
MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25")
DESTRUCTIVE = os.environ.get("SCHEMATHESIS_DESTRUCTIVE") == "1"
BUDGET_S = 60
READS = ("GET", "HEAD", "OPTIONS")
WRITES = ("PUT", "PATCH")  # DELETE is the other write of the document


def runs() -> list[list[str]]:
    """The schemathesis options of each run, in order."""
    if DESTRUCTIVE:
        return [[]]
    reads = [arg for method in READS for arg in ("--include-method", method)]
    writes = [arg for method in WRITES for arg in ("--include-method", method)]
    # Invalid inputs only: each must be refused, so nothing is written. Many generated
    # bodies turn out valid and are dropped, hence the health check; a stateful phase has
    # no accepted answer to follow.
    negative = ["--mode", "negative", "--phases", "examples,coverage,fuzzing"]
    return [reads, [*writes, *negative, "--suppress-health-check", "filter_too_much"]]


def files_under(*roots: Path) -> dict[str, bytes]:
    return {
        str(path): path.read_bytes()
        for root in roots
        for path in sorted(root.rglob("*") if root.is_dir() else [root])
        if path.is_file()
    }


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
    # The store's official source is on the internet: tests stay on loopback.
    config = YAML().load(host_factory.config_path)
    config["plugins"]["store-official"] = False
    YAML().dump(config, host_factory.config_path)
    watched = (host_factory.config_path, host_factory.plugins_dir)
    before = files_under(*watched)
    started = time.monotonic()
    with run_server(host_factory.config_path) as running:
        assert running.service.wait_ready(30)
        for index, options in enumerate(runs()):
            done = subprocess.run(
                [
                    exe,
                    "run",
                    f"{running.base_url}/openapi.json",
                    *options,
                    "--checks",
                    "not_a_server_error",
                    "--max-examples",
                    MAX_EXAMPLES,
                    "--header",
                    f"Authorization: Bearer {KEY}",
                    "--seed",
                    "1",
                    "--report-dir",
                    str(tmp_path / f"report-{index}"),
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
                cwd=tmp_path,
            )
            assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    elapsed = time.monotonic() - started
    if not DESTRUCTIVE:
        assert files_under(*watched) == before, "a non-destructive run changed the files"
    if MAX_EXAMPLES == "25":
        assert elapsed < BUDGET_S, f"the bounded run took {elapsed:.0f}s"
