"""`plugins.socket`: the Unix socket that programs started elsewhere connect to, by token.

A connection must say rpc.hello within a few seconds, naming a plugin ID that has a token
in the config and that token; anything else is answered with an error and closed, and
logged with the reason. A good one waits here until that plugin's backend takes it.
Tokens are compared in constant time, and are per plugin: a token opens one ID only.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ...envelope import ci_get
from . import rpc

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S: Final = 5.0  # a connection that says nothing this long is closed
_HELLO_LIMIT: Final = 64 * 1024  # an rpc.hello is small: a longer first line is refused


@dataclass
class Arrival:
    """A connection whose rpc.hello named a plugin and its token; not yet answered."""

    sock: socket.socket
    lines: rpc.Lines  # what came after the hello stays in its buffer
    hello: rpc.Message
    peer: str

    def close(self) -> None:
        self.sock.close()


class SocketListener:
    """The listening socket, its accept thread, and the connections waiting for a backend."""

    def __init__(self, path: Path, on_arrival: Callable[[str], None]) -> None:
        self.path = path
        self._on_arrival = on_arrival
        self._tokens: dict[str, str] = {}
        self._waiting: dict[str, Arrival] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._sock = _listen(path)
        self._thread = threading.Thread(
            target=self._accept, name=f"cliproxy-plugin-socket-{path.name}", daemon=True
        )
        self._thread.start()

    def set_tokens(self, tokens: Mapping[str, str]) -> None:
        """The plugin IDs that may connect, each with its token (from the config file)."""
        with self._cond:
            self._tokens = dict(tokens)
            stale = [pid for pid in self._waiting if pid not in self._tokens]
            gone = [self._waiting.pop(pid) for pid in stale]
        for arrival in gone:
            arrival.close()

    def take(self, plugin_id: str, timeout: float) -> Arrival | None:
        """The connection waiting for `plugin_id`, waiting up to `timeout` for one."""
        with self._cond:
            self._cond.wait_for(lambda: plugin_id in self._waiting or self._closed, timeout)
            return self._waiting.pop(plugin_id, None)

    def accepted(self) -> list[str]:
        """The plugin IDs that have a token."""
        with self._cond:
            return list(self._tokens)

    def waiting(self, plugin_id: str) -> bool:
        with self._cond:
            return plugin_id in self._waiting

    def close(self) -> None:
        with self._cond:
            self._closed = True
            waiting, self._waiting = list(self._waiting.values()), {}
            self._cond.notify_all()
        for arrival in waiting:
            arrival.close()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            self.path.unlink()

    # -- its threads ------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._greet, args=(conn,), name="cliproxy-plugin-hello", daemon=True
            ).start()

    def _greet(self, conn: socket.socket) -> None:
        peer = _peer(conn)
        lines = rpc.Lines(conn, _HELLO_LIMIT)
        try:
            line = lines.read_line(HELLO_TIMEOUT_S)
            if line is None:
                raise rpc.ProtocolViolation("it closed the connection before rpc.hello")
            message = rpc.parse(line)
            if message.method != rpc.HELLO or message.id is None:
                raise rpc.ProtocolViolation("its first message must be rpc.hello")
            plugin_id = self._check(message)
        except (rpc.ProtocolViolation, OSError) as exc:
            reason = "it sent no rpc.hello within 5 s" if isinstance(exc, TimeoutError) else exc
            log.warning(
                "plugins.socket %s: refused a connection from %s: %s", self.path, peer, reason
            )
            with contextlib.suppress(OSError):
                conn.sendall(rpc.error(None, rpc.INVALID_REQUEST, str(reason)))
            conn.close()
            return
        arrival = Arrival(conn, lines, message, peer)
        with self._cond:
            if self._closed:
                arrival.close()
                return
            older = self._waiting.get(plugin_id)
            self._waiting[plugin_id] = arrival
            self._cond.notify_all()
        if older is not None:
            older.close()  # a program that reconnected before it was taken
        self._on_arrival(plugin_id)

    def _check(self, message: rpc.Message) -> str:
        """The plugin ID the hello names, if its token is that plugin's."""
        params = message.params if isinstance(message.params, dict) else {}
        plugin_id = ci_get(params, "plugin_id")
        token = ci_get(params, "token")
        with self._cond:
            expected = self._tokens.get(plugin_id) if isinstance(plugin_id, str) else None
        if expected is None:
            raise rpc.ProtocolViolation(
                f"plugin ID {plugin_id!r} has no token in the config "
                "(plugins.configs.<id>.token or token_file), so it may not connect"
            )
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode("utf-8"), expected.encode("utf-8")
        ):
            raise rpc.ProtocolViolation(
                f"wrong or missing token for plugin {plugin_id}: give the token configured "
                "for this plugin ID (CLIPROXY_PLUGIN_TOKEN)"
            )
        return str(plugin_id)


def _listen(path: Path) -> socket.socket:
    """A listening socket at `path`, 0600; a stale socket file there is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise OSError(f"plugins.socket: {path} exists and is not a socket; remove it")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Before bind: the file is created with the socket's mode, so it is never open to
        # others, not even for a moment.
        os.fchmod(sock.fileno(), 0o600)
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


def _peer(conn: socket.socket) -> str:
    """pid and uid of the connecting process, for the log."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except (OSError, AttributeError):
        return "a process"
    pid, uid, _ = (int.from_bytes(creds[i : i + 4], "little") for i in (0, 4, 8))
    return f"pid {pid} (uid {uid})"
