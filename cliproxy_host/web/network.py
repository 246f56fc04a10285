"""The loopback rule: which client addresses count as this machine."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str | None) -> bool:
    """Whether a client address is loopback: 127.0.0.0/8, ::1 or ::ffff:127.x.x.x.

    Only literal addresses count; names such as "localhost" or Starlette's "testclient"
    say nothing about where a request came from.
    """
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback
