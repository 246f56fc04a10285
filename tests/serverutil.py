"""Run the real management server (uvicorn) on a free loopback port for a test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from cliproxy_host.host.service import HostService
from cliproxy_host.management.auth import KeyChecker, ManagementAuth, protect_secret
from cliproxy_host.server.app import create_server
from cliproxy_host.web.header_limit import SERVER_HEAD_BYTES

KEY = "test-management-key"


@dataclass
class RunningServer:
    base_url: str
    service: HostService
    client: httpx.Client  # sends the management key
    anonymous: httpx.Client  # sends none


@contextmanager
def run_server(config_path: Path, *, key: str = KEY) -> Iterator[RunningServer]:
    service = HostService(config_path, protect_secret=protect_secret)
    auth = ManagementAuth(KeyChecker(None, key), allow_remote=False)
    app = create_server(service, auth)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it keep-alive requests wait for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            log_config=None,
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=SERVER_HEAD_BYTES,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the management server did not start")
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(base_url=base, headers=headers, timeout=30) as client,
        httpx.Client(base_url=base, timeout=30) as anonymous,
    ):
        try:
            yield RunningServer(base, service, client, anonymous)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll `predicate()` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)
