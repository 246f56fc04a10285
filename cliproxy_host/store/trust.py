"""How an installed plugin is trusted and run: the signature check of a store install or an
upload, and the `isolation` it writes into the plugin's config entry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from ..config import HostConfig
from ..errors import PluginUntrusted
from ..trust import Verdict, verify_plugin

Isolation = Literal["inprocess", "process"]


def verify_installed(
    config: HostConfig, plugin_id: str, staged: Path, target: Path, signature: bytes | None
) -> Verdict:
    """Check a file about to be installed as `target` against plugins.trusted-keys and
    plugins.require-signature (with `signature`, the content of its `.sig`, if one came
    with it); raise the PluginUntrusted subclass that says why it may not be installed.

    The config's `sha256` pin of the plugin is not applied: it names the file being
    replaced, and the store's checksum (or the upload's `?sha256=`) vouches for this one.
    """
    policy = dataclasses.replace(config.trust_policy(plugin_id), sha256=None)
    data = staged.read_bytes()  # capped: the download or upload cap bounded it
    try:
        # The staged file has no .sig beside it: only `signature` can sign it.
        return verify_plugin(data, staged, policy, plugin_id=plugin_id, signature=signature)
    except PluginUntrusted as exc:
        # Named as the file it would have become, not the temp file it was.
        message = exc.message.replace(str(staged), str(target))
        raise type(exc)(message, plugin_id=plugin_id) from None


def installed_isolation(requested: Isolation | None, verdict: Verdict) -> Isolation:
    """The isolation written for a plugin installed from the store or by upload.

    What the operator's request says wins (`isolation` in the query or the body). Otherwise
    a file signed by a key of plugins.trusted-keys runs in-process, and any other file
    fetched from elsewhere runs in a worker process, where a crash or a stray write cannot
    take the host down.
    """
    if requested is not None:
        return requested
    return "inprocess" if verdict.signed else "process"
