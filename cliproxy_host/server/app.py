"""create_server: /v1 goes to the gateway, /console to the operator's console, everything
else (and the lifespan, which starts and stops the plugins) to the management API; each
keeps its own middlewares and errors."""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ..console.app import PREFIX as CONSOLE_PREFIX
from ..console.app import create_console
from ..gateway.app import create_gateway
from ..host.service import HostService
from ..management.app import create_app
from ..management.auth import ManagementAuth

__all__ = ["GATEWAY_PREFIX", "Server", "create_server"]

GATEWAY_PREFIX: Final = "/v1"


class Server:
    """The ASGI app `cliproxy-host serve` runs. The path is handed on unchanged, so each
    app routes the full path it documents."""

    def __init__(self, management: FastAPI, gateway: FastAPI, console: ASGIApp) -> None:
        self.management = management
        self.gateway = gateway
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _under(scope["path"], GATEWAY_PREFIX):
            await self.gateway(scope, receive, send)
        elif scope["type"] == "http" and _under(scope["path"], CONSOLE_PREFIX):
            await self.console(scope, receive, send)
        else:
            await self.management(scope, receive, send)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def create_server(service: HostService, auth: ManagementAuth) -> Server:
    """The management API (`auth` guards it) beside the gateway (the client keys guard it)
    and the console (`auth`'s key signs in; it shows the API's plugin routes and links)."""
    management = create_app(service, auth)
    console = create_console(
        service, auth, management.state.plugin_routes, management.state.resource_links
    )
    return Server(management, create_gateway(service), console)
