"""A real HTTP/1.1 server on 127.0.0.1 in a background thread, for tests that need one."""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit


class LocalServer:
    """A running server: where it listens and which request targets it has seen."""

    host = "127.0.0.1"

    def __init__(self, httpd: _Server) -> None:
        self._httpd = httpd
        self.port: int = httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    @property
    def hits(self) -> list[str]:
        """Request targets in arrival order (absolute URLs when used as a proxy)."""
        return list(self._httpd.hits)


@contextmanager
def serve() -> Iterator[LocalServer]:
    """Run a server for the duration of the block.

    Routes (any method; also reachable as a forward proxy, absolute-form targets included):
      /echo                  JSON {"method", "target", "headers": [[name, value], ...], "body": b64}
      /big?size=N[&chunked=1] N bytes of b"x", with Content-Length or chunked
      /slow?seconds=S        waits S seconds, then answers "slow"
      /drip?count=N&interval=S  N bytes with Content-Length, one every S seconds
      /redirect              302 to /echo
      /multi                 repeated X-Multi and Set-Cookie headers
      /stream?count=N&interval=S  chunked: "chunk-0\\n", "chunk-1\\n", ... one every S seconds
      /set-cookie            sets a cookie
      /status?code=N         an empty answer with that status
    """
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield LocalServer(httpd)
    finally:
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Handlers sleeping in /slow or idle keep-alive connections must not delay the teardown.
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.hits: list[str] = []
        self.stopping = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up are what several tests are about.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    routes: ClassVar[dict[str, Callable[[_Handler, dict[str, str]], None]]]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def handle_any(self) -> None:
        self.server.hits.append(self.path)
        target = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(target.query).items()}
        self.routes.get(target.path, _Handler.not_found)(self, query)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any

    def reply(
        self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start_chunked(self, content_type: str = "text/plain") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def not_found(self, query: dict[str, str]) -> None:
        self.reply(404, b"not found")

    def echo(self, query: dict[str, str]) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = {
            "method": self.command,
            "target": self.path,
            "headers": [[name, value] for name, value in self.headers.items()],
            "body": base64.b64encode(body).decode("ascii"),
        }
        self.reply(200, json.dumps(answer).encode(), [("Content-Type", "application/json")])

    def big(self, query: dict[str, str]) -> None:
        size = int(query.get("size", "0"))
        if query.get("chunked"):
            self.start_chunked()
            for start in range(0, size, 4096):
                self.write_chunk(b"x" * min(4096, size - start))
            self.end_chunked()
        else:
            self.reply(200, b"x" * size)

    def slow(self, query: dict[str, str]) -> None:
        self.server.stopping.wait(float(query.get("seconds", "5")))
        self.reply(200, b"slow")

    def drip(self, query: dict[str, str]) -> None:
        count = int(query.get("count", "10"))
        self.send_response(200)
        self.send_header("Content-Length", str(count))
        self.end_headers()
        for _ in range(count):
            if self.server.stopping.wait(float(query.get("interval", "0.1"))):
                return
            self.wfile.write(b".")

    def redirect(self, query: dict[str, str]) -> None:
        self.reply(302, b"", [("Location", "/echo")])

    def multi(self, query: dict[str, str]) -> None:
        self.reply(
            200,
            b"multi",
            [
                ("X-Multi", "a"),
                ("X-Multi", "b"),
                ("Set-Cookie", "one=1"),
                ("Set-Cookie", "two=2"),
            ],
        )

    def stream(self, query: dict[str, str]) -> None:
        self.start_chunked("text/event-stream")
        for index in range(int(query.get("count", "3"))):
            if index and self.server.stopping.wait(float(query.get("interval", "0"))):
                return
            self.write_chunk(f"chunk-{index}\n".encode())
        self.end_chunked()

    def set_cookie(self, query: dict[str, str]) -> None:
        self.reply(200, b"cookie set", [("Set-Cookie", "session=secret; Path=/")])

    def status(self, query: dict[str, str]) -> None:
        self.reply(int(query.get("code", "200")))


_Handler.routes = {
    "/echo": _Handler.echo,
    "/big": _Handler.big,
    "/slow": _Handler.slow,
    "/drip": _Handler.drip,
    "/redirect": _Handler.redirect,
    "/multi": _Handler.multi,
    "/stream": _Handler.stream,
    "/set-cookie": _Handler.set_cookie,
    "/status": _Handler.status,
}
