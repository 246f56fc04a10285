"""The server as `cliproxy-host serve` builds it (management API and /v1), plus one trivial
/v1 route: `POST /v1/bench/ping` answers `{}` behind the same client key, so the gateway's
fixed cost per request (HTTP, routing, key, body, JSON answer) is measured on its own.

Run: python -m bench.gateway_server --config PATH (the config holds `api-keys`)
Prints "ready <port>" once every plugin has loaded; stops on stdin EOF.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fastapi import Depends, Request, Response

from bench.server_process import serve_until_eof
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

    serve_until_eof(app, service)


if __name__ == "__main__":
    main()
