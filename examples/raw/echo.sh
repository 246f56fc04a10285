#!/bin/sh
# A plugin program with no SDK: the raw protocol (docs/PROTOCOL.md), standard library only.
# It greets the host, registers as an executor and answers executor.execute with the
# request's Payload unchanged. Start it as plugins.configs.<id>.command: ["sh", "examples/raw/echo.sh"].
exec python3 -c '
import json, os, socket
conn = socket.socket(fileno=int(os.environ["CLIPROXY_PLUGIN_FD"]))
lines = conn.makefile("rb")
def send(message):
    conn.sendall(json.dumps(message).encode() + b"\n")
send({"jsonrpc": "2.0", "id": 0, "method": "rpc.hello", "params": {
    "plugin_id": os.environ["CLIPROXY_PLUGIN_ID"], "abi_version": 1, "schema_version": 3}})
for line in lines:
    message = json.loads(line)
    method, params = message.get("method"), message.get("params") or {}
    if method is None:
        continue  # the answer to our hello
    if method in ("plugin.register", "plugin.reconfigure"):
        result = {"schema_version": 3, "capabilities": {"executor": True}, "metadata": {
            "Name": "echo-raw", "Version": "1.0.0", "Author": "cliproxy-host",
            "GitHubRepository": "https://example.invalid/echo-raw"}}
    elif method == "executor.execute":
        result = {"Payload": params.get("Payload", ""), "Headers": {}}
    elif method in ("rpc.ping", "plugin.shutdown"):
        send({"jsonrpc": "2.0", "id": message["id"], "result": {} if method == "rpc.ping" else {"ok": True, "result": {}}})
        continue
    else:
        send({"jsonrpc": "2.0", "id": message["id"], "result": {"ok": False, "error": {
            "code": "unknown_method", "message": "echo-raw does not serve " + method}}})
        continue
    send({"jsonrpc": "2.0", "id": message["id"], "result": {"ok": True, "result": result}})
'
