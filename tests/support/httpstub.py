"""Small misbehaving HTTP servers for the outbound-client tests (real sockets, no mocks)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[BaseHTTPRequestHandler], None]


class StubServer:
    """Answers each path with the handler registered for it; records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.hits: list[tuple[str, str, dict[str, str]]] = []
        self.release = threading.Event()
        stub = self

        class _H(BaseHTTPRequestHandler):
            def _any(self) -> None:
                stub.hits.append((self.command, self.path, dict(self.headers.items())))
                route = stub.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

            do_GET = do_POST = do_PUT = _any  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.server.daemon_threads = True
        # a client that gave up (deadline tests) is expected: no traceback on stderr
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"

    def json(self, path: str, body: Any, status: int = 200, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Content-Type", "application/fhir+json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        self.routes[path] = handler


@contextmanager
def serving(httpd: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    """Serve on a daemon thread while inside; then stop and close the server."""
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def stub_server() -> Iterator[StubServer]:
    stub = StubServer()
    with serving(stub.server):
        try:
            yield stub
        finally:
            stub.release.set()  # before shutdown: a handler held by the stub must end first
