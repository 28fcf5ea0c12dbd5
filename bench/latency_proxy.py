"""A loopback HTTP proxy that adds a fixed delay to every response, as a network would.

    python bench/latency_proxy.py --port 18080 --upstream http://127.0.0.1:9000/fhir \
        --delay-ms 20

Requests to ``http://127.0.0.1:PORT/fhir/...`` are forwarded to the upstream base with their
method, query, body and headers (Authorization included); the answer is held ``--delay-ms``
before it is sent back. Links in the answer that name the upstream base are rewritten to the
proxy's base, so that a client following ``next`` links stays behind the proxy. Listens on
127.0.0.1 only; one thread per connection, so parallel calls are delayed in parallel.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "host", "content-length"}


def make_handler(upstream: str, public: str, delay_s: float) -> type[BaseHTTPRequestHandler]:
    up = urlsplit(upstream)
    up_host, up_port = up.hostname or "127.0.0.1", up.port or 80
    up_path = up.path.rstrip("/")
    own_path = urlsplit(public).path.rstrip("/")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

        def _forward(self) -> None:
            path = self.path
            if own_path and path.startswith(own_path):
                path = path[len(own_path):]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            conn = http.client.HTTPConnection(up_host, up_port, timeout=30)
            try:
                conn.request(self.command, up_path + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status, reason = resp.status, resp.reason
                resp_headers = [(k, v) for k, v in resp.getheaders()
                                if k.lower() not in HOP_BY_HOP]
            except OSError as exc:
                data = f"upstream failed: {type(exc).__name__}".encode()
                status, reason, resp_headers = 502, "Bad Gateway", [("Content-Type",
                                                                       "text/plain")]
            finally:
                conn.close()
            data = data.replace(upstream.rstrip("/").encode(), public.rstrip("/").encode())
            time.sleep(delay_s)  # added to whatever the upstream took
            self.send_response(status, reason)
            for k, v in resp_headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _forward  # noqa: N815
        do_POST = _forward  # noqa: N815
        do_PUT = _forward  # noqa: N815
        do_DELETE = _forward  # noqa: N815

    return Handler


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections when a client opens more at once
    # (the service fetches its prefetch keys in parallel), and a dropped SYN costs a 1 s retry.
    request_queue_size = 128
    daemon_threads = True


def serve(port: int, upstream: str, delay_ms: float) -> ThreadingHTTPServer:
    public = f"http://127.0.0.1:{port}{urlsplit(upstream).path.rstrip('/')}"
    return _Server(("127.0.0.1", port), make_handler(upstream, public, delay_ms / 1000))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="upstream base URL (loopback)")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    host = urlsplit(args.upstream).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        print("latency_proxy: the upstream must be on loopback", file=sys.stderr)
        return 2
    server = serve(args.port, args.upstream, args.delay_ms)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
