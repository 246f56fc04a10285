"""Host callbacks: the host.* methods a plugin may call (host.log, host.http.*, host.model.*)."""

from __future__ import annotations

from .handler import Callback, HostCallbacks
from .http import HttpBridge
from .log import host_log

__all__ = ["Callback", "HostCallbacks", "HttpBridge", "host_log"]
