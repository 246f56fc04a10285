"""The worker end of the per-hop harness (bench/figures/hops.py): the isolated worker's
steps, one call at a time, with a timestamp between each.

    python -m bench.hops_worker --fd N --path LIB --spin-us US

It drives the same functions the isolated worker does on a call line (wire.read_frame,
unpack_call, NativePlugin.call, send_frame) on a socket of its own, so the real worker
stays free of timing code. After each RESULT it sends a trace frame (kind PONG, four
CLOCK_MONOTONIC nanosecond stamps), outside the timed path.
"""

from __future__ import annotations

import argparse
import io
import select
import socket
import struct
import time
from pathlib import Path
from typing import cast

from cliproxy_host.backends.isolated.wire import (
    LINE_BUFFER,
    Kind,
    read_frame,
    send_frame,
    spin_until_readable,
    unpack_call,
)
from cliproxy_host.backends.native import NativePlugin

TRACE = struct.Struct(">4q")  # woken, decoded, plugin answered, reply sent


def _no_host_calls(plugin_id: str, method: str, request: bytes) -> bytes:
    return b'{"ok":true,"result":{}}'


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hops_worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--path", type=Path, required=True)
    parser.add_argument("--spin-us", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket(fileno=args.fd)
    file = cast(io.BufferedReader, sock.makefile("rb", buffering=LINE_BUFFER))
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    spin = args.spin_us / 1e6
    plugin = NativePlugin("hops", args.path, _no_host_calls)
    clock = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux: one clock for both processes
    try:
        while True:
            if spin:
                spin_until_readable(poller, spin)
            # peek: the one blocking read the real worker makes, filling the buffer; the
            # frame is then parsed from memory (the "decode" hop).
            if not file.peek(1):
                break
            woken = clock()
            frame = read_frame(file, None)
            if frame is None:
                break
            _, request_id, payload = frame
            method, request = unpack_call(payload)
            decoded = clock()
            data = plugin.call(method, request)
            answered = clock()
            send_frame(sock, Kind.RESULT, request_id, (data,))
            sent = clock()
            send_frame(sock, Kind.PONG, request_id, (TRACE.pack(woken, decoded, answered, sent),))
    finally:
        plugin.close(timeout=1.0)
        sock.close()


if __name__ == "__main__":
    main()
