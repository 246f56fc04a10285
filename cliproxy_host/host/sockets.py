"""plugins.socket for the host: the listener a config asks for, and the tokens it accepts."""

from __future__ import annotations

import functools
import hmac
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Final

import bcrypt

from ..backends.program.listener import SocketListener
from ..config import HostConfig
from ..errors import ConfigError

log = logging.getLogger(__name__)

# The management key's other source (management/auth.py ENV_KEY; that room is above this
# one, so the name is repeated here).
_MANAGEMENT_KEY_VARIABLE: Final = "CLIPROXY_MANAGEMENT_KEY"
_BCRYPT_HASH: Final = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_BCRYPT_MAX_BYTES: Final = 72


def socket_path(cfg: HostConfig) -> Path | None:
    """Where plugins.socket listens (relative to the config file's folder), if anywhere."""
    if cfg.plugins.socket is None:
        return None
    base = cfg.source_path.parent if cfg.source_path is not None else Path.cwd()
    return base / cfg.plugins.socket


def is_socket_plugin(cfg: HostConfig, plugin_id: str) -> bool:
    """An entry for a program started elsewhere: a token, and no command."""
    entry = cfg.plugin_entry(plugin_id)
    return entry.command is None and (entry.token is not None or entry.token_file is not None)


def tokens(cfg: HostConfig) -> dict[str, str]:
    """The token of every enabled socket plugin; ConfigError for an unreadable token_file."""
    base = cfg.source_path.parent if cfg.source_path is not None else Path.cwd()
    found: dict[str, str] = {}
    for pid in cfg.plugins.configs:
        entry = cfg.plugin_entry(pid)
        if not entry.enabled or not is_socket_plugin(cfg, pid):
            continue
        if entry.token is not None:
            found[pid] = entry.token
            where = f"plugins.configs.{pid}.token"
        else:
            assert entry.token_file is not None
            path = base / entry.token_file
            try:
                token = path.read_text("utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"plugins.configs.{pid}.token_file: cannot read {path}: {exc}"
                ) from None
            if not token:
                raise ConfigError(f"plugins.configs.{pid}.token_file: {path} is empty")
            found[pid] = token
            where = f"plugins.configs.{pid}.token_file ({path})"
        key = _management_key_named(cfg, found[pid])
        if key is not None:
            raise ConfigError(
                f"{where}: plugin {pid}'s token is the management key ({key}); a plugin "
                "program must never hold it: give the plugin a token of its own"
            )
    return found


def _management_key_named(cfg: HostConfig, token: str) -> str | None:
    """Where the management key equal to `token` is set, or None if none is."""
    secret = cfg.remote_management.secret_key
    if secret and _same_key(token, secret):
        return "remote-management.secret-key"
    env_key = os.environ.get(_MANAGEMENT_KEY_VARIABLE)
    if env_key and _same_key(token, env_key):
        return _MANAGEMENT_KEY_VARIABLE
    return None


@functools.lru_cache(maxsize=64)
def _same_key(token: str, key: str) -> bool:
    """Whether `token` is `key`, given as plaintext or as a bcrypt hash (cached: a bcrypt
    check takes ~100 ms, and the config is applied again at every reload)."""
    if _BCRYPT_HASH.fullmatch(key) is None:
        return hmac.compare_digest(token.encode(), key.encode())
    raw = token.encode()
    return len(raw) <= _BCRYPT_MAX_BYTES and bcrypt.checkpw(raw, key.encode("ascii"))


class ProgramSockets:
    """The host's one listener on plugins.socket, following the config."""

    def __init__(self, on_arrival: Callable[[str], None]) -> None:
        self._on_arrival = on_arrival
        self.listener: SocketListener | None = None

    def update(self, cfg: HostConfig) -> None:
        """Listen where the config says (or stop), and accept its tokens."""
        path = socket_path(cfg)
        if self.listener is not None and self.listener.path != path:
            self.listener.close()
            self.listener = None
        if path is None:
            return
        accepted = tokens(cfg)
        if self.listener is None:
            try:
                self.listener = SocketListener(path, self._on_arrival)
            except OSError as exc:
                raise ConfigError(f"plugins.socket: cannot listen on {path}: {exc}") from None
        self.listener.set_tokens(accepted)

    def connected(self) -> frozenset[str]:
        """The plugin IDs whose program is connected and waiting to be loaded."""
        listener = self.listener
        if listener is None:
            return frozenset()
        return frozenset(pid for pid in listener.accepted() if listener.waiting(pid))

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
