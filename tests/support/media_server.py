"""A threaded HTTP server on 127.0.0.1 (port 0) that serves media the test gives it, and misbehaves on request.

    with serve_media({"/red.png": png_bytes}) as server:
        load_image(server.url("/red.png"))

Routes besides the files: `/trickle/<n>` sends n bytes one per second (Content-Length n); `/endless` streams zeros
without a Content-Length; `/announce/<n>` announces n bytes and sends none; `/silent` accepts and never answers;
`/redirect?to=<url>` answers 302; `/loop` redirects to itself. Every request path is recorded in `server.requests`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class MediaServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.requests: list[str] = []
        self.stopping = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: MediaServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.server.requests.append(self.path)
        parts = urlsplit(self.path)
        route, _, arg = parts.path.partition("/")[2].partition("/")
        try:
            if parts.path in self.server.files:
                self._send(self.server.files[parts.path])
            elif route == "trickle":
                self._trickle(int(arg))
            elif route == "endless":
                self._endless()
            elif route == "silent":
                self.server.stopping.wait()
            elif route == "announce":
                self._headers(200, {"Content-Length": arg})
            elif route == "redirect":
                self._headers(302, {"Location": parse_qs(parts.query)["to"][0], "Content-Length": "0"})
            elif route == "loop":
                self._headers(302, {"Location": "/loop", "Content-Length": "0"})
            else:
                self._headers(404, {"Content-Length": "0"})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def _headers(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, body: bytes) -> None:
        self._headers(200, {"Content-Length": str(len(body))})
        self.wfile.write(body)

    def _trickle(self, size: int) -> None:
        self._headers(200, {"Content-Length": str(size)})
        for _ in range(size):
            if self.server.stopping.wait(1.0):
                return
            self.wfile.write(b"x")
            self.wfile.flush()

    def _endless(self) -> None:
        self.close_connection = True
        self._headers(200, {"Connection": "close"})
        while not self.server.stopping.is_set():
            self.wfile.write(bytes(1 << 16))
            time.sleep(0.001)


@contextmanager
def serve_media(files: dict[str, bytes] | None = None) -> Iterator[MediaServer]:
    server = MediaServer(files or {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
