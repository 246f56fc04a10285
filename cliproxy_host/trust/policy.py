"""The trust decision for one plugin file: its pin, its signature, the policy that asks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SignatureInvalid, SignatureMissing
from .digest import check_digest, read_image, sha256_hex
from .signatures import parse_signature, read_signature, signature_path, signer


@dataclass(frozen=True)
class TrustPolicy:
    """What a plugin's file must satisfy: the config's `sha256` pin of the plugin, and
    `plugins.trusted-keys` / `plugins.require-signature`."""

    sha256: str | None = None
    trusted_keys: tuple[str, ...] = ()
    require_signature: bool = False

    @property
    def active(self) -> bool:
        """Whether there is anything to check (then the file is loaded from memory)."""
        return bool(self.sha256 or self.trusted_keys or self.require_signature)


@dataclass(frozen=True)
class Verdict:
    """What verifying a file found: its digest and the trusted key that signed it."""

    sha256: str
    signer: str | None = None  # the key as written in plugins.trusted-keys

    @property
    def signed(self) -> bool:
        """Whether a trusted key signed the file."""
        return self.signer is not None


def verify_plugin(
    data: bytes,
    path: Path,
    policy: TrustPolicy,
    *,
    plugin_id: str | None = None,
    signature: bytes | None = None,
) -> Verdict:
    """Check the bytes of a plugin file against its policy; raise the PluginUntrusted
    subclass that says why they may not be loaded.

    `data` must be the very bytes that are loaded afterwards (never the file read again);
    `path` names the file in messages and locates its `.sig`, unless `signature` brings
    the content of one (an upload's, say, not yet on disk).
    """
    if policy.sha256:
        digest = check_digest(policy.sha256, data, path, plugin_id=plugin_id)
    else:
        digest = sha256_hex(data)
    if signature is not None:
        signature = parse_signature(signature, signature_path(path), plugin_id=plugin_id)
    else:
        signature = read_signature(path, plugin_id=plugin_id)
    if signature is None:
        if policy.require_signature:
            raise SignatureMissing(
                f"{path} has no signature ({signature_path(path).name}) and "
                "plugins.require-signature is true; sign it with `cliproxy-host sign "
                f"{path.name} --key KEY.pem` using a key of plugins.trusted-keys",
                plugin_id=plugin_id,
            )
        return Verdict(digest)
    if not policy.trusted_keys:
        return Verdict(digest)  # nothing to check it against: the file counts as unsigned
    key = signer(data, signature, policy.trusted_keys)
    if key is None:
        raise SignatureInvalid(
            f"{signature_path(path)} is not a signature of {path} by any key of "
            "plugins.trusted-keys; sign this very file again, or add the signer's public "
            "key to plugins.trusted-keys",
            plugin_id=plugin_id,
        )
    return Verdict(digest, key)


def verify_file(
    path: Path, policy: TrustPolicy, *, plugin_id: str | None = None
) -> tuple[bytes, Verdict]:
    """Read the file once and verify it: (the bytes to load, the verdict)."""
    data = read_image(path)
    return data, verify_plugin(data, path, policy, plugin_id=plugin_id)
