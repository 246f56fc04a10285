"""The out-of-process alternative: JSON-RPC 2.0 over a Unix socket, newline-delimited.

The server is a separate Python process that loads the plugin in-process there (with
the project's NativePlugin) and answers every request
``{"jsonrpc":"2.0","id":N,"method":M,"params":{...}}`` with
``{"jsonrpc":"2.0","id":N,"result":...}`` or an ``error`` object, the way
socket-based plugin systems do. One connection, one request in flight, orjson on
both sides (compact JSON never contains a raw newline, so a newline frames a message).

Run: python -m bench.baselines.jsonrpc_server --socket PATH --plugin LIB
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson

from cliproxy_host.backends.native import NativePlugin
from cliproxy_host.envelope import decode
from cliproxy_host.errors import PluginError

REPO = Path(__file__).resolve().parents[2]


def serve(socket_path: Path, plugin_path: Path) -> None:
    def no_callbacks(plugin_id: str, method: str, request: bytes) -> bytes:
        return b'{"ok":true,"result":{}}'

    plugin = NativePlugin("jsonrpc", plugin_path, no_callbacks)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(1)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as rfile:
            for line in rfile:
                message = orjson.loads(line)
                reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message.get("id")}
                method = message["method"]
                try:
                    raw = plugin.call(method, orjson.dumps(message.get("params") or {}))
                    reply["result"] = decode(raw, method=method)
                except PluginError as exc:
                    reply["error"] = {"code": -32000, "message": str(exc), "data": exc.code}
                conn.sendall(orjson.dumps(reply) + b"\n")
    finally:
        listener.close()
        plugin.close()


class JsonRpcError(Exception):
    pass


class JsonRpcClient:
    """Starts the server process and sends it requests, one at a time."""

    def __init__(self, plugin_path: Path, socket_path: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO)) if p)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.baselines.jsonrpc_server",
                "--socket",
                str(socket_path),
                "--plugin",
                str(plugin_path),
            ],
            stdout=subprocess.PIPE,
            # not the repository: PYTHONPATH decides which cliproxy_host is imported
            cwd=socket_path.parent,
            env=env,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            self.proc.kill()
            raise RuntimeError("the JSON-RPC server did not start")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock.connect(str(socket_path))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.rfile: IO[bytes] = self.sock.makefile("rb")
        self._ids = itertools.count(1)

    def call(self, method: str, params: Any) -> Any:
        request_id = next(self._ids)
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        self.sock.sendall(orjson.dumps(message) + b"\n")
        reply = orjson.loads(self.rfile.readline())
        if reply.get("id") != request_id:
            raise JsonRpcError(f"reply to {reply.get('id')}, expected {request_id}")
        if "error" in reply:
            raise JsonRpcError(reply["error"])
        return reply["result"]

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--plugin", type=Path, required=True)
    args = parser.parse_args()
    serve(args.socket, args.plugin)


if __name__ == "__main__":
    main()
