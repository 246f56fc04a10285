"""plugins.socket for the host: the listener a config asks for, and the tokens it accepts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ..backends.program.listener import SocketListener
from ..config import HostConfig
from ..errors import ConfigError

log = logging.getLogger(__name__)


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
            continue
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
    return found


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
