"""The README's quick start for /v1, as written: the config `make run` writes (with its
client key), the example plugins installed, then the README's `curl` lines and its
`openai` snippet run against a real server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, HostFactory
from .serverutil import run_server

README = REPO / "README.md"


def _block(language: str, marker: str) -> str:
    for body in re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S):
        if marker in body:
            return str(body)
    raise AssertionError(f"README.md has no {language} block with {marker!r}")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the quick start uses curl")
def test_readme_quick_start_talks_to_the_example_executor(
    examples: dict[str, Path], echo_c: Path, host_factory: HostFactory
) -> None:
    for plugin_id, library in {**examples, "echo-c": echo_c}.items():
        host_factory.add(plugin_id, library)
    config = host_factory.config_path
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "default_config.py"), str(config)],
        check=True,
        capture_output=True,
    )
    with run_server(config) as server:
        assert server.service.wait_ready(30)
        port = server.base_url.rsplit(":", 1)[1]
        shell = _block("sh", "KEY=$(awk").replace("127.0.0.1:8317", f"127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", shell + "\necho\necho KEY=$KEY"],
            cwd=config.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert '"id":"echo-1"' in done.stdout
        assert "echo-c got your request" in done.stdout
        key = done.stdout.rsplit("KEY=", 1)[1].strip()
        assert len(key) >= 24
        snippet = _block("python", "from openai import OpenAI")
        ran = subprocess.run(
            [sys.executable, "-c", snippet.replace("127.0.0.1:8317", f"127.0.0.1:{port}")],
            env={**os.environ, "KEY": key},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "echo-c got your request\necho-c got your request"
