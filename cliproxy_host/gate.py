"""The answer gate: the one place where a failure on a path that C called becomes an envelope.

Whatever the host runs on behalf of a plugin's host->call (in-process through the cffi
trampoline, in an isolated worker's host, or in `check`'s fake host) must answer an
envelope and never raise: an exception that escapes into C is lost, and the plugin is
left without an answer. Every such path wraps its handler once with `gated`; the native
trampoline, which has a try of its own for the request it unpacks, answers what it
catches with `failure_envelope` (a wrapper would cost a call on its hot path).

Nothing here may import more than the floor: backends import it, and an isolated
worker process must start without the host's HTTP client and config parser.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import HostCallFailed, PluginError

# The callbacks room's logger: operators find every failed host callback under one name.
# Failed host callbacks are logged where operators have always found them.
log = logging.getLogger("cliproxy_host.callbacks")

# (plugin ID, method, request envelope bytes) -> response envelope bytes.
Handler = Callable[[str, str, bytes], bytes]


def failure_envelope(exc: BaseException, plugin_id: str, method: str) -> bytes:
    """The envelope that answers a failed host callback: its own error, or host_call_failed."""
    if isinstance(exc, PluginError):
        return exc.to_envelope()
    log.error("plugin %s: host callback %s failed", plugin_id, method, exc_info=exc)
    return HostCallFailed(f"host callback {method} failed: {exc}").to_envelope()


def gated(handler: Handler) -> Handler:
    """`handler`, answering an error envelope where it would raise."""

    def answer(plugin_id: str, method: str, request: bytes) -> bytes:
        try:
            return handler(plugin_id, method, request)
        except Exception as exc:
            return failure_envelope(exc, plugin_id, method)

    return answer
