"""Detached ed25519 signatures: `<file>.sig` beside a plugin file, the base64 of 64 bytes
signed over the file's exact bytes."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import SignatureInvalid
from .keys import public_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNATURE_SUFFIX: Final = ".sig"
SIGNATURE_BYTES: Final = 64
# A signature file is one line; anything much longer is not one, and is not read whole.
_MAX_SIG_FILE: Final = 1024


def signature_path(path: Path) -> Path:
    """Where the signature of a plugin file lies: the file's name plus `.sig`."""
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def read_signature(path: Path, *, plugin_id: str | None) -> bytes | None:
    """The signature beside the plugin file `path`, or None when there is none."""
    sig_path = signature_path(path)
    try:
        with sig_path.open("rb") as fh:
            text = fh.read(_MAX_SIG_FILE + 1)
    except FileNotFoundError:
        return None
    return parse_signature(text, sig_path, plugin_id=plugin_id)


def parse_signature(text: bytes, source: Path | str, *, plugin_id: str | None) -> bytes:
    """The 64 bytes of a `.sig` file's content; SignatureInvalid naming `source` if it
    holds none."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raw = b""
    if len(text) > _MAX_SIG_FILE or len(raw) != SIGNATURE_BYTES:
        raise SignatureInvalid(
            f"{source} is no ed25519 signature (expected the base64 of 64 bytes on one "
            "line); sign the file again with `cliproxy-host sign`",
            plugin_id=plugin_id,
        )
    return raw


def signer(data: bytes, signature: bytes, trusted_keys: Sequence[str]) -> str | None:
    """The trusted key (as written in the config) whose signature over `data` this is."""
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415  (see keys.py)

    for text in trusted_keys:
        try:
            public_key(text).verify(signature, data)
        except InvalidSignature:
            continue
        return text
    return None


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """The content of a `.sig` file for `data`: base64 and a newline."""
    return base64.b64encode(key.sign(data)) + b"\n"
