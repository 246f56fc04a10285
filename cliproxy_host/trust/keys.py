"""ed25519 keys as the config and the CLI write them: a public key is the base64 of its
raw 32 bytes; a private key is a PEM (PKCS#8) file.

cryptography is imported where it is used (45 ms): the config and every isolated worker
import this room, and only signing and checking a signature need it.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

PUBLIC_KEY_BYTES: Final = 32


def public_key_problem(text: str) -> str | None:
    """Why `text` is no public key of plugins.trusted-keys, or None when it is one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raw = None
    if raw is None or len(raw) != PUBLIC_KEY_BYTES:
        return (
            "expected an ed25519 public key as the base64 of its 32 raw bytes (44 "
            "characters, as `cliproxy-host keygen` prints it)"
        )
    return None


def public_key(text: str) -> Ed25519PublicKey:
    """The key a trusted-keys entry holds (validated by the config: see public_key_problem)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))


def encode_public(key: Ed25519PublicKey) -> str:
    """A public key as plugins.trusted-keys takes it."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: PLC0415

    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def generate() -> tuple[bytes, str]:
    """A new key pair: (the private key as PEM, the public key as trusted-keys takes it)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return pem, encode_public(private.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    """The ed25519 private key of a PEM file; ValueError naming the file if it holds none."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
        load_pem_private_key,
    )

    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{path} holds no unencrypted PEM private key ({exc}); make one with "
            "`cliproxy-host keygen`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an ed25519 key")
    return key
