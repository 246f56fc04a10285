"""A plugin program with failure knobs, for the tests of the program backend (docs/PROTOCOL.md).

Methods: echo, pid, thread, env, print, sleep, crash, freeze, garbage, flood, host (calls a host
method), host_flood, child (starts a process that outlives nothing). Environment knobs:
KNOB_HELLO = silent | wrong-id | wrong-abi | garbage | exit (misbehave at the handshake).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from cliproxy_host.sdk import HostError, Plugin, Request
from cliproxy_host.sdk.connection import Connection

plugin = Plugin("knobs", version="1.0.0", capabilities=["executor"])


@plugin.method("executor.identifier")
def identifier(request: Request) -> dict[str, Any]:
    return {"identifier": "knobs"}


@plugin.method("echo")
def echo(request: Request) -> dict[str, Any]:
    return request.params


@plugin.method("pid")
def pid(request: Request) -> dict[str, Any]:
    return {"pid": os.getpid()}


@plugin.method("thread")
def thread(request: Request) -> dict[str, Any]:
    return {"thread": threading.get_ident()}


@plugin.method("env")
def env(request: Request) -> dict[str, Any]:
    names = ("CLIPROXY_PLUGIN_ID", "KNOB_VALUE")
    return {"cwd": os.getcwd(), **{name: os.environ.get(name) for name in names}}


@plugin.method("print")
def print_(request: Request) -> dict[str, Any]:
    print(request.get("text"), flush=True)
    return {}


@plugin.method("sleep")
def sleep(request: Request) -> dict[str, Any]:
    time.sleep(float(request.get("seconds", 0)))
    return {"slept": request.get("seconds")}


@plugin.method("crash")
def crash(request: Request) -> dict[str, Any]:
    os._exit(3)


@plugin.method("freeze")
def freeze(request: Request) -> dict[str, Any]:
    os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(10)  # the stop reaches every thread before this answer could
    return {}


def _raw(data: bytes) -> None:
    sock = plugin.host._connection.sock  # misbehaving on purpose
    sock.sendall(data)


@plugin.method("garbage")
def garbage(request: Request) -> dict[str, Any]:
    _raw(b"this is not json\n")
    return {}


@plugin.method("flood")
def flood(request: Request) -> dict[str, Any]:
    chunk = b"x" * 65536
    for _ in range(int(request.get("chunks", 64))):
        _raw(chunk)
    return {}


@plugin.method("host")
def host(request: Request) -> dict[str, Any]:
    try:
        return {"result": plugin.host.call(str(request.get("method")), request.get("params"))}
    except HostError as exc:
        return {"code": exc.code, "message": exc.message}


@plugin.method("host_flood")
def host_flood(request: Request) -> dict[str, Any]:
    codes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            plugin.host.call("host.test.slow", {})
            code = "ok"
        except HostError as exc:
            code = exc.code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=one) for _ in range(int(request.get("count", 100)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return {"busy": codes.count("plugin_busy"), "ok": codes.count("ok")}


@plugin.method("child")
def child(request: Request) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    return {"pid": proc.pid}


def misbehave(how: str) -> None:
    conn = Connection.inherited()
    hello: dict[str, Any] = {
        "plugin_id": os.environ["CLIPROXY_PLUGIN_ID"],
        "abi_version": 1,
        "schema_version": 3,
    }
    if how == "silent":
        time.sleep(120)
    elif how == "exit":
        sys.exit(0)
    elif how == "garbage":
        conn.sock.sendall(b"\x00\x01 hello?\n")
    else:
        if how == "wrong-id":
            hello["plugin_id"] = "someone-else"
        elif how == "wrong-abi":
            hello["abi_version"] = 99
        conn.send({"jsonrpc": "2.0", "id": 0, "method": "rpc.hello", "params": hello})
    conn.read()
    time.sleep(120)


if __name__ == "__main__":
    knob = os.environ.get("KNOB_HELLO")
    if knob:
        misbehave(knob)
    else:
        plugin.run()
