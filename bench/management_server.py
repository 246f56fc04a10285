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
import sys
import threading
from pathlib import Path

import uvicorn
from fastapi import Depends

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


if __name__ == "__main__":
    main()
