"""Constant-time key comparison: a presented key against every known key, by digest."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

__all__ = ["digest", "match_index"]


def digest(key: str) -> bytes:
    """The SHA-256 digest of a key: what is compared, so every comparison has one length."""
    return hashlib.sha256(key.encode()).digest()


def match_index(presented: bytes, known: Sequence[bytes]) -> int | None:
    """The index of the digest in `known` that equals `presented` (a digest), or None.

    Every entry is compared, with no early exit: which key matched, and whether one did,
    must not show in the timing.
    """
    found = -1
    for index, candidate in enumerate(known):
        equal = hmac.compare_digest(presented, candidate)
        found = index if equal else found
    return None if found < 0 else found
