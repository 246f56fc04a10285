"""The answer gate: the one place where a failure on a path that C called becomes an envelope.

Whatever the host runs on behalf of a plugin's host->call (in-process through the cffi
trampoline, in an isolated worker's host, or in `check`'s fake host) must answer an
envelope and never raise: an exception that escapes into C is lost, and the plugin is
left without an answer. Every such path calls `gated` once to wrap its handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..errors import HostCallFailed, PluginError

log = logging.getLogger(__name__)

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
