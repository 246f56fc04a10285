"""Plugin files through the database: which a replica may take, and writing them in place."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..config.files import write_atomically
from ..errors import PluginError
from ..trust.digest import sha256_hex
from ..trust.signatures import parse_signature, signature_path, signer

log = logging.getLogger(__name__)


def local_trust(local: Mapping[str, Any], plugin_id: str) -> tuple[str | None, tuple[str, ...]]:
    """The replica's own pin of the plugin and its own trusted keys, from its local file
    (never from the database: a hash held there is no defence against a write to it)."""
    plugins = local.get("plugins")
    if not isinstance(plugins, Mapping):
        return None, ()
    keys = plugins.get("trusted-keys")
    configs = plugins.get("configs")
    entry = configs.get(plugin_id) if isinstance(configs, Mapping) else None
    pin = entry.get("sha256") if isinstance(entry, Mapping) else None
    trusted = tuple(str(k) for k in keys) if isinstance(keys, Sequence) else ()
    return (str(pin).strip().lower() if pin else None), trusted


def refusal(
    plugin_id: str, data: bytes, signature: bytes | None, pin: str | None, keys: tuple[str, ...]
) -> str | None:
    """Why this replica may not take the file (None: it may): it must match the local pin
    of the plugin, or be signed by a key of the local trusted-keys."""
    digest = sha256_hex(data)
    if pin is not None and digest == pin:
        return None
    if signature is not None and keys:
        try:
            raw = parse_signature(signature, f"{plugin_id} (config store)", plugin_id=plugin_id)
        except PluginError as exc:
            return str(exc)
        if signer(data, raw, keys) is not None:
            return None
        return (
            f"its signature is by no key of this replica's plugins.trusted-keys (sha256 {digest})"
        )
    if pin is not None:
        return f"its sha256 {digest} is not this replica's pin {pin}"
    return (
        f"it is neither signed by a key of this replica's plugins.trusted-keys nor pinned"
        f" (plugins.configs.{plugin_id}.sha256 in this replica's file); sha256 {digest}"
    )


def safe_name(name: str) -> PurePosixPath | None:
    """The file's path under the plugins dir, or None if it would leave it."""
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") for p in path.parts):
        return None
    return path


def place(plugins_dir: Path, name: PurePosixPath, data: bytes, signature: bytes | None) -> Path:
    """Write the verified file (and its .sig) atomically into the replica's plugins dir."""
    target = plugins_dir.joinpath(*name.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    sig = signature_path(target)
    # The signature first: the watcher may load the file the moment it appears.
    if signature is not None:
        write_atomically(sig, signature)
    else:
        sig.unlink(missing_ok=True)
    write_atomically(target, data)
    return target


def remove_taken(plugins_dir: Path, name: PurePosixPath, digest: str) -> bool:
    """Delete a file this replica took from the database (and its .sig), if it still holds
    what was taken: one replaced by hand since stays. Answers whether it was deleted."""
    target = plugins_dir.joinpath(*name.parts)
    try:
        if not target.is_file() or sha256_hex(target.read_bytes()) != digest:
            return False
        signature_path(target).unlink(missing_ok=True)
        target.unlink()
    except FileNotFoundError:
        return False
    return True
