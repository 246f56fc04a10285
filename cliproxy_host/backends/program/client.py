"""ProgramPlugin: a plugin that is a program in any language, speaking docs/PROTOCOL.md.

The host starts the program (`plugins.configs.<id>.command`), or takes its connection
from plugins.socket (`SocketListener`), and keeps it with the isolated mode's
`Supervisor`: restarts with backoff, the fuse, heartbeats, the last accepted config
replayed to a new process, the process group killed on exit.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from functools import partial

from ...abi import HostHandler
from ...errors import PluginLoadError
from ...gate import gated
from ..isolated.limits import IsolationLimits
from ..isolated.process import REAP_GRACE, WorkerGone
from ..isolated.supervisor import Supervisor, unloading_error
from ..pool import HOST_CALL_THREADS, DaemonPool
from ..protocol import DEFAULT_DRAIN_TIMEOUT, Health
from .connection import ProgramConnection
from .launch import ProgramCommand
from .listener import SocketListener

__all__ = ["ProgramCommand", "ProgramPlugin"]


class ProgramPlugin:
    """A plugin program on a socket; a PluginBackend. Thread-safe."""

    # A call that overruns its timeout is ended (abandoned) here, not on a guard thread.
    ends_overruns = True

    def __init__(
        self,
        plugin_id: str,
        source: ProgramCommand | SocketListener,
        handler: HostHandler,
        limits: IsolationLimits | None = None,
    ) -> None:
        """Start the program (or wait for it to connect) and for its rpc.hello; raise
        PluginLoadError if it fails."""
        self.plugin_id = plugin_id
        self.source = source
        self.path = source.program_file() if isinstance(source, ProgramCommand) else source.path
        self._answer_host = gated(handler)
        self._host_calls = DaemonPool(
            f"cliproxy-program-{plugin_id}-host", soft_max=HOST_CALL_THREADS
        )
        self._supervisor: Supervisor[ProgramConnection] = Supervisor(
            plugin_id,
            self.path,
            # A program starts from scratch (spawn=): only a library has a standby form.
            limits or IsolationLimits(),
            self._replay,
            self._host_call,
            answer_host=partial(self._answer_host, plugin_id),
            spawn=self._spawn,
        )
        try:
            self._supervisor.start()
        except BaseException:
            self._host_calls.close(0.0)
            raise

    def _spawn(
        self, supervisor: Supervisor[ProgramConnection], ids: itertools.count[int]
    ) -> ProgramConnection:
        limits = supervisor.limits
        if isinstance(self.source, ProgramCommand):
            return ProgramConnection.launch(self.plugin_id, self.source, limits, ids, supervisor)
        arrival = self.source.take(self.plugin_id, limits.start_timeout_s)
        if arrival is None:
            raise PluginLoadError(
                f"plugin {self.plugin_id} has not connected to plugins.socket "
                f"{self.source.path} within {limits.start_timeout_s:g} s; start it with "
                f"CLIPROXY_PLUGIN_ID={self.plugin_id}, CLIPROXY_PLUGIN_SOCKET and "
                "CLIPROXY_PLUGIN_TOKEN (its token) set; it is loaded when it connects",
                plugin_id=self.plugin_id,
            )
        return ProgramConnection.attach(self.plugin_id, arrival, limits, ids, supervisor)

    def call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        """Send a request envelope; answer the program's response envelope bytes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        supervisor = self._supervisor
        supervisor.enter(method)
        try:
            while True:
                connection = supervisor.worker_for(method, request, deadline)
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    return connection.call(method, request, left, timeout)
                except WorkerGone:
                    continue
        finally:
            supervisor.leave()

    def configured(self, request: bytes, timeout: float | None) -> None:
        self._supervisor.configured(request, timeout)

    def _replay(
        self, connection: ProgramConnection, method: str, request: bytes, timeout: float | None
    ) -> bytes:
        return connection.call(method, request, timeout)

    def _host_call(
        self, connection: ProgramConnection, request_id: int, method: str, request: bytes
    ) -> None:
        try:
            # Not on the connection's reader: a callback may block (HTTP) or call the
            # plugin again, whose answer that thread has to read.
            self._host_calls.submit(
                lambda: connection.answer_host(
                    request_id, self._answer_host(self.plugin_id, method, request)
                )
            )
        except RuntimeError:  # closed: the plugin is gone as far as the host knows
            with contextlib.suppress(OSError):
                connection.answer_host(
                    request_id, unloading_error(self.plugin_id, method).to_envelope()
                )

    def health(self) -> Health:
        return self._supervisor.health()

    def close(self, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Refuse new calls, drain those in flight (bounded), shut the program down."""
        self._supervisor.close(timeout)
        self._host_calls.close(REAP_GRACE)

    def __repr__(self) -> str:
        if isinstance(self.source, ProgramCommand):
            return f"ProgramPlugin({self.plugin_id!r}, {list(self.source.argv)!r})"
        return f"ProgramPlugin({self.plugin_id!r}, socket={str(self.path)!r})"
