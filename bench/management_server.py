"""The management server as `cliproxy-host serve` builds it, plus one trivial route.

HostService + create_app + uvicorn on a loopback port, the key taken as from
CLIPROXY_MANAGEMENT_KEY. The extra route `GET /bench/ping` answers `{}` behind the same
auth dependency, so the server's fixed cost per request (HTTP parsing, routing, auth,
JSON response) can be measured on its own.

Run: python -m bench.management_server --config PATH --key KEY
Prints "ready <port>" once every plugin has loaded; stops on SIGTERM or stdin EOF.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fastapi import Depends

from bench.server_process import serve_until_eof
from cliproxy_host.host.service import HostService
from cliproxy_host.management.app import create_app
from cliproxy_host.management.auth import KeyChecker, ManagementAuth, protect_secret

PING_PATH = "/bench/ping"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()

    # N copies of one example declare the same management routes: the host skips the
    # duplicates with a warning per copy, expected here.
    logging.getLogger("cliproxy_host").setLevel(logging.ERROR)
    service = HostService(args.config, protect_secret=protect_secret)
    auth = ManagementAuth(KeyChecker(None, args.key), allow_remote=False)
    app = create_app(service, auth)

    # The management routes' own gate: routes added to the app get none by default.
    @app.get(PING_PATH, include_in_schema=False, dependencies=[Depends(auth)])
    def ping() -> dict[str, str]:
        return {}

    serve_until_eof(app, service)


if __name__ == "__main__":
    main()
