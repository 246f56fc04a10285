"""A real store on 127.0.0.1: registries, zips, checksums and GitHub-style release JSON
served from a table of paths, with answers that break on purpose (cut short, hanging)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["whole", "truncate", "hang"]
HANG_LIMIT_S = 30.0  # a hanging answer gives up after this, or when the server stops


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    mode: Mode = "whole"
    status: int = 200


class StoreServer:
    def __init__(self, httpd: _Server) -> None:
        self._httpd = httpd
        self.port: int = httpd.server_address[1]
        self.routes: dict[str, Route] = httpd.routes

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def put(self, path: str, body: bytes, **kwargs: Any) -> str:
        self.routes[path] = Route(body, **kwargs)
        return self.url(path)

    @property
    def hits(self) -> list[str]:
        return list(self._httpd.hits)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        self.stopping = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route.mode == "hang":
            deadline = time.monotonic() + HANG_LIMIT_S
            while not self.server.stopping.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.close_connection = True
            return
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        if route.mode == "truncate":
            # Half the body, then the connection closes: a download cut short.
            self.wfile.write(route.body[: len(route.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(route.body)


@contextmanager
def store_server() -> Iterator[StoreServer]:
    httpd = _Server()
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield StoreServer(httpd)
    finally:
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
