"""A benchmark server in a process of its own: started, announced and stopped one way.

Server side, `serve_until_eof`: uvicorn on a free loopback port, "ready <port>" on stdout
once every plugin has loaded, stop on stdin EOF. Bench side, `ServerProcess`: runs such a
module and reads its port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import uvicorn

from cliproxy_host.host.service import HostService

REPO = Path(__file__).resolve().parents[1]


def serve_until_eof(app: Any, service: HostService) -> None:
    """Serve `app` on 127.0.0.1 until stdin closes; announce the port once `service` is ready."""
    # Bound by uvicorn itself, as `cliproxy-host serve` does (port 0: a free one). A
    # socket made here and handed over with sockets=[...] would have proto 0, and asyncio
    # then leaves Nagle on: keep-alive requests would wait ~40 ms for delayed ACKs.
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    )

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            threading.Event().wait(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        service.wait_ready(60)
        sys.stdout.write(f"ready {port}\n")
        sys.stdout.flush()

    def stop_on_eof() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=announce, daemon=True).start()
    threading.Thread(target=stop_on_eof, daemon=True).start()
    server.run()


class ServerProcess:
    """`python -m <module> --config <config> [args]`, waited for until it says "ready <port>"."""

    def __init__(self, module: str, config: Path, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO)) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--config", str(config), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=config.parent,  # PYTHONPATH decides which cliproxy_host is imported
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "ready":
            self.close()
            raise RuntimeError(f"{module} did not start: {line}")
        self.port = int(line[1])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
