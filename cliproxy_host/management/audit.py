"""Auditing a management write: who sent it (from the request) and the config around it.

A write route wraps its change in `audited(...)`: the config file's digest is taken before
and after, and the outcome (ok, or the error's code) is appended to the service's audit
log, if it has one. Routes that install or upload plugin files use the same helper.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from starlette.requests import Request

from ..errors import PluginError
from ..host.service import HostService
from ..observe.audit import config_digest, key_fingerprint
from .auth import presented_key
from .errors import ApiError

__all__ = ["Caller", "audited"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who sent a request and where to: what the audit log says of it."""

    route: str  # "PUT /v0/management/plugins/x/config"
    client: str | None
    key: str | None  # key_fingerprint of the key presented

    @classmethod
    def of(cls, request: Request) -> Caller:
        return cls(
            f"{request.method} {request.url.path}",
            request.client.host if request.client else None,
            key_fingerprint(presented_key(request.headers)),
        )


@contextmanager
def audited(
    service: HostService,
    caller: Caller,
    action: str,
    plugin: str | None,
    detail: str | None = None,
) -> Iterator[None]:
    """Run the write in the `with` block and append its audit entry, whatever its outcome.

    A failure to write the entry is logged, not raised: the change itself has been made.
    """
    trail = service.audit
    if trail is None:
        yield
        return
    before = config_digest(service.config_path)
    outcome = "ok"
    try:
        yield
    except PluginError as exc:
        outcome = exc.code
        raise
    except ApiError as exc:
        outcome = exc.code
        raise
    except BaseException:
        outcome = "internal_error"
        raise
    finally:
        try:
            trail.record(
                action=action,
                route=caller.route,
                plugin=plugin,
                client=caller.client,
                key=caller.key,
                config_before=before,
                config_after=config_digest(service.config_path),
                outcome=outcome,
                detail=detail,
            )
        except OSError as exc:
            log.error("audit log %s: could not record %s: %s", trail.path, caller.route, exc)
