"""`cliproxy-host serve` serves /v1 beside /v0, and its start-up lines say so."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..conftest import HostFactory
from .conftest import KEY, bearer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_prints_the_client_api_and_serves_it(
    host_factory: HostFactory, examples: dict[str, Path]
) -> None:
    host_factory.add("simple-c", examples["simple-c"])
    config = host_factory.write_config({"simple-c": {"enabled": True}}, extra={"api-keys": [KEY]})
    port = _free_port()
    cmd = [sys.executable, "-m", "cliproxy_host.cli", "serve", "--config", str(config)]
    process = subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
        client_line = next(line for line in lines if "client API" in line)
        assert f"http://127.0.0.1:{port}/v1/plugins/<id>/<method>" in client_line
        assert "1 client key(s) from api-keys" in client_line
        assert KEY not in "".join(lines)
        url = f"http://127.0.0.1:{port}/v1/plugins/simple-c/executor.identifier"
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.post(url, json={}, headers=bearer(KEY), timeout=5)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /v1 in 30 s"
            time.sleep(0.1)
        assert answer.json() == {"identifier": "simple-c"}
    finally:
        process.terminate()
        process.wait(timeout=30)
