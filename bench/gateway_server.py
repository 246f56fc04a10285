"""The server as `cliproxy-host serve` builds it (management API and /v1), plus one trivial
/v1 route: `POST /v1/bench/ping` answers `{}` behind the same client key, so the gateway's
fixed cost per request (HTTP, routing, key, body, JSON answer) is measured on its own.

Run: python -m bench.gateway_server --config PATH (the config holds `api-keys`)
Prints "ready <port>" once every plugin has loaded; stops on stdin EOF.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

import uvicorn
from fastapi import Depends, Request, Response

from cliproxy_host.host.service import HostService
from cliproxy_host.management.auth import KeyChecker, ManagementAuth, protect_secret
from cliproxy_host.server.app import create_server

PING_PATH = "/v1/bench/ping"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()

    logging.getLogger("cliproxy_host").setLevel(logging.ERROR)
    service = HostService(args.config, protect_secret=protect_secret)
    auth = ManagementAuth(KeyChecker(None, None), allow_remote=False)
    app = create_server(service, auth)
    gateway = app.gateway

    # Reads the body as the model routes do, and answers a small JSON object.
    @gateway.post(PING_PATH, dependencies=[Depends(gateway.state.client_auth)])
    async def ping(request: Request) -> Response:
        await request.body()
        return Response(b"{}", media_type="application/json")

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


if __name__ == "__main__":
    main()
