"""The gateway's FastAPI application: the /v1 routes, their client key, caps and errors."""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI

from .. import __version__
from ..host.service import HostService
from ..web.body_limit import BodyLimit
from ..web.header_limit import HeaderLimit
from .calls import calls_router
from .errors import install_error_handlers, refusal
from .keys import ClientAuth
from .models import models_router
from .offload import Offload
from .protocols import ProtocolScope
from .slots import StreamSlots

__all__ = ["MAX_BODY_BYTES", "create_gateway"]

API_NAME: Final = "the /v1 API"  # in the refusals of the caps
# Requests carry prompts and their attachments: roomier than the management API's.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024


def create_gateway(service: HostService, auth: ClientAuth | None = None) -> FastAPI:
    """The /v1 app over `service`'s host; `auth` reads the client keys from its config.

    It has no lifespan of its own: the server that mounts it starts and stops the service.
    """
    auth = auth if auth is not None else ClientAuth(lambda: service.config)
    app = FastAPI(
        title="cliproxy-host /v1",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    install_error_handlers(app)
    app.add_middleware(
        BodyLimit, cap=lambda: MAX_BODY_BYTES, api=API_NAME, cap_key=None, refuse=refusal
    )
    app.add_middleware(HeaderLimit, api=API_NAME, refuse=refusal)
    # Added last, so it runs first: the caps' refusals need the request's protocol.
    app.add_middleware(ProtocolScope)
    offload, slots = Offload("v1"), StreamSlots()
    app.include_router(calls_router(service.host, auth, offload, slots))
    app.include_router(models_router(service.host, auth, offload, slots))
    app.state.client_auth = auth
    return app
