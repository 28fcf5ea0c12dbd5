"""A loopback HTTP proxy that adds a fixed delay to every response, as a network would.

    python bench/latency_proxy.py --port 18080 --upstream http://127.0.0.1:9000/fhir \
        --delay-ms 20

Requests to ``http://127.0.0.1:PORT/fhir/...`` are forwarded to the upstream base with their
method, query, body and headers (Authorization included); the answer is held ``--delay-ms``
after the upstream gave it, then sent back. Links in the answer that name the upstream base are
rewritten to the proxy's base, so that a client following ``next`` links stays behind the
proxy. Listens on 127.0.0.1 only.

One asyncio loop with kept-alive upstream connections: a network's delay costs no CPU, so the
proxy should cost as little as it can on a small machine (a thread per request here made
parallel calls look slower than they are).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
              b"te", b"trailers", b"transfer-encoding", b"upgrade", b"host",
              b"content-length"}
MAX_HEAD = 64 * 1024


class BadMessage(Exception):
    pass


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The first line and the headers of one HTTP/1.1 message."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError from exc
        raise BadMessage("truncated head") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadMessage("head too large") from exc
    lines = raw[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadMessage("bad header line")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


async def read_body(reader: asyncio.StreamReader, headers: list[tuple[bytes, bytes]]) -> bytes:
    if (header(headers, b"transfer-encoding") or b"").lower() == b"chunked":
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = header(headers, b"content-length")
    return await reader.readexactly(int(length)) if length else b""


class Upstream:
    """Kept-alive connections to the upstream server, one per request in flight."""

    IDLE_S = 2.0  # servers close idle connections after a few seconds (uvicorn: 5)

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connection(self, fresh: bool
                          ) -> tuple[bool, asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        while self.idle and not fresh:
            since, reader, writer = self.idle.pop()
            if loop.time() - since < self.IDLE_S:
                return True, reader, writer
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return False, reader, writer

    async def send(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        fresh = False
        while True:
            reused, reader, writer = await self._connection(fresh)
            try:
                out = [method + b" " + target + b" HTTP/1.1",
                       b"Host: " + f"{self.host}:{self.port}".encode(),
                       b"Content-Length: " + str(len(body)).encode()]
                out += [k + b": " + v for k, v in headers if k.lower() not in HOP_BY_HOP]
                writer.write(b"\r\n".join(out) + b"\r\n\r\n" + body)
                await writer.drain()
                status, resp_headers = await read_head(reader)
                data = await read_body(reader, resp_headers)
            except (EOFError, BadMessage, ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                if not reused:
                    raise
                fresh = True  # a kept-alive connection the upstream had closed: a new one
                continue
            if (header(resp_headers, b"connection") or b"").lower() == b"close":
                writer.close()
            else:
                self.idle.append((asyncio.get_running_loop().time(), reader, writer))
            return status, resp_headers, data


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def make_handler(upstream: str, public: str, delay_s: float) -> Handler:
    up = urlsplit(upstream)
    pool = Upstream(up.hostname or "127.0.0.1", up.port or 80)
    up_path = up.path.rstrip("/").encode()
    own_path = urlsplit(public).path.rstrip("/").encode()
    old, new = upstream.rstrip("/").encode(), public.rstrip("/").encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    first, headers = await read_head(reader)
                except EOFError:
                    return
                method, target, _version = first.split(b" ", 2)
                body = await read_body(reader, headers)
                if own_path and target.startswith(own_path):
                    target = target[len(own_path):]
                try:
                    status, resp_headers, data = await pool.send(method, up_path + target,
                                                                 headers, body)
                except (OSError, BadMessage, EOFError, asyncio.IncompleteReadError) as exc:
                    status = b"HTTP/1.1 502 Bad Gateway"
                    resp_headers = [(b"Content-Type", b"text/plain")]
                    data = f"upstream failed: {type(exc).__name__}".encode()
                data = data.replace(old, new)
                await asyncio.sleep(delay_s)  # added to whatever the upstream took
                out = [status] + [k + b": " + v for k, v in resp_headers
                                  if k.lower() not in HOP_BY_HOP]
                out.append(b"Content-Length: " + str(len(data)).encode())
                writer.write(b"\r\n".join(out) + b"\r\n\r\n" + data)
                await writer.drain()
                if (header(headers, b"connection") or b"").lower() == b"close":
                    return
        except (BadMessage, ValueError, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    return handle


async def serve(port: int, upstream: str, delay_ms: float) -> None:
    public = f"http://127.0.0.1:{port}{urlsplit(upstream).path.rstrip('/')}"
    server = await asyncio.start_server(make_handler(upstream, public, delay_ms / 1000),
                                        "127.0.0.1", port, backlog=256, limit=MAX_HEAD)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="upstream base URL (loopback)")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    host = urlsplit(args.upstream).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        print("latency_proxy: the upstream must be on loopback", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args.port, args.upstream, args.delay_ms))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
