"""`cliproxy-host keygen` and `sign`: ed25519 keys and detached signatures for plugin authors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..trust import read_image, sha256_hex
from ..trust.keys import generate, load_private
from ..trust.signatures import sign, signature_path


def cmd_keygen(out: Path) -> int:
    """Write a new private key to `out` (0600, never over an existing file); print the
    public key as plugins.trusted-keys takes it."""
    pem, public = generate()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"cliproxy-host: {out} exists; choose another --out or remove it", file=sys.stderr)
        return 2
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    print(f"private key: {out} (keep it secret; `cliproxy-host sign FILE --key {out}`)")
    print(f"public key:  {public}")
    print("trust it in the host's config:")
    print(f"  plugins:\n    trusted-keys:\n      - {public}")
    return 0


def cmd_sign(path: Path, key_path: Path) -> int:
    """Write `<path>.sig`, the signature of the file's bytes by the key in `key_path`."""
    try:
        key = load_private(key_path)
        data = read_image(path)
    except (OSError, ValueError) as exc:
        print(f"cliproxy-host: {exc}", file=sys.stderr)
        return 2
    target = signature_path(path)
    target.write_bytes(sign(data, key))
    print(f"signed {path} (sha256 {sha256_hex(data)}): {target}")
    print("ship the .sig beside the library; the host checks it against plugins.trusted-keys")
    return 0
