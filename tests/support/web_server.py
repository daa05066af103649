"""A local web server for tool-web tests: fixed pages by path, and a record of every request.

Tests point web_fetch or web_search at it and then check both what the tool returned and
whether (and how) the server was asked at all: a refused URL must leave it untouched.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Page:
    """What the server answers for one path."""

    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    # Seconds to wait before answering, for a server too slow for the caller.
    delay: float = 0.0


@dataclass(frozen=True)
class Seen:
    """A request the server received."""

    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]


def redirect(location: str, status: int = 302) -> Page:
    """A redirect to location."""
    return Page(status=status, content_type="text/plain", headers={"Location": location})


class WebServer:
    """A threaded HTTP server on 127.0.0.1 serving fixed pages; unknown paths get 404."""

    def __init__(self, pages: Mapping[str, Page] | None = None) -> None:
        self.pages: dict[str, Page] = dict(pages or {})
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # A short poll interval so stopping does not wait half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        """An http URL of path on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self) -> list[Seen]:
        """The requests received so far."""
        with self._lock:
            return list(self.requests)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with server._lock:
                    server.requests.append(
                        Seen(parts.path, parse_qs(parts.query), dict(self.headers.items()))
                    )
                page = server.pages.get(parts.path, Page(b"not here", "text/plain", 404))
                if page.delay:
                    time.sleep(page.delay)
                # A client that stops reading at its byte cap, or gave up waiting, may have
                # hung up already.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(page.status)
                    self.send_header("Content-Type", page.content_type)
                    self.send_header("Content-Length", str(len(page.body)))
                    for name, value in page.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(page.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def start(self) -> None:
        """Starts serving in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def web_server(pages: Mapping[str, Page] | None = None) -> Iterator[WebServer]:
    """A running WebServer, stopped on exit."""
    server = WebServer(pages)
    server.start()
    try:
        yield server
    finally:
        server.stop()
