"""sha256 digests of plugin files: reading a file once, hashing, comparing with a pin."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Final

from ..errors import ChecksumMismatch

_HEX_DIGEST: Final = re.compile(r"[0-9a-fA-F]{64}")


def is_sha256(text: str) -> bool:
    """Whether `text` is a sha256 digest in hex (64 digits, either case)."""
    return _HEX_DIGEST.fullmatch(text) is not None


def sha256_hex(data: bytes) -> str:
    """The sha256 of `data`, 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def read_image(path: Path) -> bytes:
    """The whole file, read once: what is hashed, verified and then loaded is this copy,
    so the file can be replaced on disk at any moment without the check being fooled."""
    with path.open("rb") as fh:
        return fh.read()


def check_digest(
    expected: str, data: bytes, path: Path, *, plugin_id: str | None, source: str = "config"
) -> str:
    """The digest of `data`; ChecksumMismatch unless it is `expected` (`source` says where
    the expected digest comes from: the config's pin, or what the host verified)."""
    actual = sha256_hex(data)
    if actual != expected.lower():
        if source == "config":
            fix = (
                f"put back the file the pin was made for or, if this file is the one you "
                f"trust, set plugins.configs.{plugin_id}.sha256: {actual}"
            )
        else:
            fix = "the file changed after the host verified it; the host reloads it on change"
        raise ChecksumMismatch(
            f"sha256 mismatch: {source} {expected.lower()}, file {actual} ({path}); {fix}",
            plugin_id=plugin_id,
        )
    return actual
