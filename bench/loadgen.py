"""A small HTTP/1.1 load generator for loopback: keep-alive connections, one per thread.

Far cheaper per request than an HTTP client library, so that on a small machine the
server, not the generator, sets the pace. Bounded by a duration and a request count;
only ever connects to 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"


@dataclass
class LoadResult:
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    elapsed_ns: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return len(self.latencies_ns) / (self.elapsed_ns / 1e9) if self.elapsed_ns else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ns:
            return float("nan")
        ordered = sorted(self.latencies_ns)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return float(ordered[index])


class _Connection:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        data = self.pending
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection mid-body")
            rest += chunk
        body, self.pending = rest[:length], rest[length:]
        return status, body

    def close(self) -> None:
        self.sock.close()


def get(
    port: int, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, bytes]:
    """One request on a fresh connection (for checks before the load); POST with a body."""
    conn = _Connection(port)
    try:
        return conn.exchange(_request(path, headers, body))
    finally:
        conn.close()


def _request(path: str, headers: dict[str, str], body: bytes | None = None) -> bytes:
    verb = "GET" if body is None else "POST"
    lines = [f"{verb} {path} HTTP/1.1", f"Host: {LOOPBACK}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (body or b"")


def run_load(
    port: int,
    path: str,
    headers: dict[str, str],
    *,
    concurrency: int,
    seconds: float,
    max_requests: int = 1_000_000,
    body: bytes | None = None,
) -> LoadResult:
    """GET `path` (POST `body` to it) on `concurrency` keep-alive connections for `seconds`."""
    request = _request(path, headers, body)
    result = LoadResult()
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)
    budget = max_requests // concurrency
    deadline_box: list[float] = []

    def worker() -> None:
        conn = _Connection(port)
        latencies: list[int] = []
        statuses: dict[int, int] = {}
        errors = 0
        try:
            barrier.wait()
            deadline = deadline_box[0]
            while len(latencies) < budget and time.perf_counter() < deadline:
                start = time.perf_counter_ns()
                try:
                    status, _ = conn.exchange(request)
                except OSError:
                    errors += 1
                    conn.close()
                    conn = _Connection(port)
                    continue
                latencies.append(time.perf_counter_ns() - start)
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    errors += 1
        finally:
            conn.close()
            with lock:
                result.latencies_ns += latencies
                result.errors += errors
                for status, count in statuses.items():
                    result.statuses[status] = result.statuses.get(status, 0) + count

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    deadline_box.append(time.perf_counter() + seconds)
    start = time.perf_counter_ns()
    barrier.wait()
    for t in threads:
        t.join(seconds + 60)
    result.elapsed_ns = time.perf_counter_ns() - start
    return result
