"""What ``baclofen-check serve`` runs gunicorn with: BufferingWorker, a worker class that gives a
thread to a connection only once its request has arrived (slow clients cannot take the
threads), whose processes learn of their master's death at once (parent-death signal) and stop
listening before anything else; and the removal of metrics directories left by killed runs."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import selectors
import shutil
import signal
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import IO, Any

from gunicorn import http
from gunicorn.http.parser import RequestParser
from gunicorn.workers.gthread import TConn, ThreadWorker

from .config import load_settings

METRICS_PREFIX = "baclofen-check-metrics-"
_PR_SET_PDEATHSIG = 1


def remove_dead_metrics_dirs(root: str | None = None) -> list[Path]:
    """Remove ``{METRICS_PREFIX}{pid}-*`` directories whose process is gone; returns them."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*"):
        pid_text = path.name[len(METRICS_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or not path.is_dir() or _alive(int(pid_text)):
            continue  # a live run's, or not named by this version
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:  # killed but not yet reaped by its parent (a zombie) is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def die_with_parent(parent: int, sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies; when the parent is
    already gone (it died before this call), send it now."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


# --- the worker -----------------------------------------------------------------------------
#
# choice: slow clients are held off by a worker class, not by a proxy started by `serve`: one
# process fewer, nothing between the client and the service to configure, and the same
# REQUEST_READ_TIMEOUT_S whether or not a buffering proxy (nginx, deploy/nginx.conf) is in front.

MORE, COMPLETE, TOO_LARGE, HEAD_TOO_LARGE = "more", "complete", "too-large", "head-too-large"
MAX_HEAD_BYTES = 64 * 1024
IN_MEMORY_BYTES = 1024 * 1024   # a larger body waits in a temporary file
READ_PER_WAKE = 16              # reads of 64 KiB per readiness event (fair to the others)


class _Chunked:
    """Where a chunked body ends, fed as it arrives (the parser checks it again later)."""

    def __init__(self) -> None:
        self.state = "size"
        self.line = bytearray()
        self.remaining = 0
        self.body = 0

    def feed(self, data: bytes) -> int | None:
        """Bytes of ``data`` up to the end of the body, or None when it goes on; raises
        ValueError on a size line that is not one."""
        i = 0
        while i < len(data):
            if self.state in ("size", "trailer"):
                j = data.find(b"\n", i)
                if j < 0:
                    self.line += data[i:]
                    if len(self.line) > MAX_HEAD_BYTES:
                        raise ValueError("chunk line too long")
                    return None
                self.line += data[i:j]
                i = j + 1
                line = bytes(self.line).rstrip(b"\r")
                self.line = bytearray()
                if self.state == "trailer":
                    if not line:
                        return i
                    continue
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                self.body += size
                self.state, self.remaining = ("data", size) if size else ("trailer", 0)
            elif self.state == "data":
                take = min(self.remaining, len(data) - i)
                i += take
                self.remaining -= take
                if not self.remaining:
                    self.state, self.remaining = "data-end", 2
            else:  # the CRLF after a chunk's data
                take = min(self.remaining, len(data) - i)
                i += take
                self.remaining -= take
                if not self.remaining:
                    self.state = "size"
        return None


class _Reading:
    """One request arriving: its bytes and where it ends (head, then body by Content-Length
    or chunked framing). What arrives after its end belongs to the next request."""

    def __init__(self, deadline: float, max_body: int, kept_alive: bool = False) -> None:
        self.deadline = deadline
        self.kept_alive = kept_alive    # the deadline is the idle one until the first byte
        self.max_body = max_body
        self.started = False
        self.head = bytearray()
        self.stored: IO[bytes] | None = None
        self.kind = ""                  # "", "length", "chunked", "none" or "raw"
        self.remaining = 0
        self.chunked: _Chunked | None = None
        self.surplus = b""
        self.expect_continue = False
        self.continued = False          # 100 Continue sent

    def feed(self, data: bytes) -> str:
        self.started = True
        if not self.kind:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return HEAD_TOO_LARGE if len(self.head) > MAX_HEAD_BYTES else MORE
            head, data = bytes(self.head[:end + 4]), bytes(self.head[end + 4:])
            self.stored = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115
            self.stored.write(head)
            state = self._framing(head[:end])
            if state != MORE:
                return state
        return self._body(data)

    def _framing(self, head: bytes) -> str:
        lines = head.split(b"\r\n")
        version = lines[0].rsplit(b" ", 1)[-1].upper()
        fields: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields.setdefault(name.strip().lower(), []).append(value.strip().lower())
        coding = b",".join(fields.get(b"transfer-encoding", []))
        lengths = set(fields.get(b"content-length", []))
        if coding:
            if lengths or coding.rsplit(b",", 1)[-1].strip() != b"chunked":
                self.kind = "raw"  # gunicorn's parser refuses it with what has arrived
                return COMPLETE
            self.kind, self.chunked = "chunked", _Chunked()
        elif lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                self.kind = "raw"
                return COMPLETE
            self.kind, self.remaining = "length", int(next(iter(lengths)))
            if self.remaining > self.max_body:
                return TOO_LARGE
        else:
            self.kind = "none"
        self.expect_continue = version == b"HTTP/1.1" and b"100-continue" in fields.get(
            b"expect", []) and (self.kind == "chunked" or self.remaining > 0)
        return MORE

    def _body(self, data: bytes) -> str:
        assert self.stored is not None
        if self.kind == "none":
            self.surplus = data
            return COMPLETE
        if self.kind == "length":
            take = data[:self.remaining]
            self.stored.write(take)
            self.remaining -= len(take)
            if self.remaining:
                return MORE
            self.surplus = data[len(take):]
            return COMPLETE
        assert self.chunked is not None
        try:
            end = self.chunked.feed(data)
        except ValueError:
            self.stored.write(data)
            return COMPLETE  # the parser answers 400
        self.stored.write(data if end is None else data[:end])
        if self.chunked.body > self.max_body:
            return TOO_LARGE
        if end is None:
            return MORE
        self.surplus = data[end:]
        return COMPLETE


class _Received:
    """The parser's source: the bytes of one request as received, then the end."""

    def __init__(self, stored: IO[bytes]) -> None:
        stored.seek(0)
        self.stored = stored

    def recv(self, size: int) -> bytes:
        return self.stored.read(size)


def _outcome(status: str, code: str, text: str) -> bytes:
    body = json.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": code, "diagnostics": text}]}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/fhir+json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class BufferingWorker(ThreadWorker):
    """gunicorn's threaded worker, except that a connection gets a thread only once its whole
    request has arrived: until then the worker's event loop reads it without blocking. A
    request whose head and body have not arrived within REQUEST_READ_TIMEOUT_S is answered
    408 and closed, one larger than MAX_BATCH_BYTES 413; an answer the client does not read
    for REQUEST_READ_TIMEOUT_S ends the connection too. HTTP/1.1 without TLS (TLS and HTTP/2
    end at the proxy in front). When the worker stops (and at once when its master dies) it
    closes its listening sockets first, so that a new master can bind the port."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = load_settings()
        self.read_timeout = settings.request_read_timeout_s
        self.max_body = max(settings.max_batch_bytes, settings.max_request_bytes)
        self.reading: dict[Any, _Reading] = {}

    def init_process(self) -> None:
        # a worker still starting (loading the app) has no handler yet: SIGTERM ends it at once
        die_with_parent(self.ppid)
        super().init_process()

    def run(self) -> None:
        # again: a change of user or group at start clears the parent-death signal; from here
        # SIGTERM is a graceful stop, listening sockets closed first
        die_with_parent(self.ppid)
        super().run()

    # connections whose request is still arriving ----------------------------------------------

    def accept(self, listener: Any) -> None:
        try:
            client, addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client, addr, listener.getsockname())  # non-blocking
        self._read_next(conn, b"", time.monotonic() + self.read_timeout)

    def _read_next(self, conn: Any, carry: bytes, deadline: float,
                   kept_alive: bool = False) -> None:
        reading = _Reading(deadline, self.max_body, kept_alive)
        self.reading[conn] = reading
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
        if carry:  # the start of the next request came with the last one
            reading.deadline = time.monotonic() + self.read_timeout
            self._take(conn, reading, carry)

    def _readable(self, conn: Any, _sock: Any) -> None:
        reading = self.reading.get(conn)
        if reading is None:
            return
        for _ in range(READ_PER_WAKE):
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # gone before its request was whole
                self._close(conn)
                return
            if reading.kept_alive and not reading.started:  # from its first byte
                reading.deadline = time.monotonic() + self.read_timeout
            if self._take(conn, reading, data):
                return

    def _take(self, conn: Any, reading: _Reading, data: bytes) -> bool:
        """Feed bytes; True when the connection left the reading state."""
        state = reading.feed(data)
        if state == MORE:
            if reading.expect_continue and not reading.continued:
                reading.continued = True  # the head is whole: the client may send the body
                try:
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                except OSError:
                    pass
            return False
        if state == COMPLETE:
            self._dispatch(conn, reading)
        elif state == TOO_LARGE:
            self._answer(conn, _outcome("413 Content Too Large", "too-costly",
                                        f"the request body is larger than {self.max_body} "
                                        "bytes (MAX_BATCH_BYTES)"))
        else:
            self._answer(conn, _outcome("431 Request Header Fields Too Large", "too-costly",
                                        "the request head is too large"))
        return True

    def _dispatch(self, conn: Any, reading: _Reading) -> None:
        self._forget(conn)
        assert reading.stored is not None
        conn.sock.setblocking(True)
        conn.parser = RequestParser(self.cfg, _Received(reading.stored), conn.client)
        conn.initialized = conn.data_ready = True
        conn.reading = reading
        self.enqueue_req(conn)

    def _answer(self, conn: Any, response: bytes) -> None:
        try:
            conn.sock.send(response)
        except OSError:
            pass
        self._close(conn)

    def _forget(self, conn: Any) -> None:
        self.reading.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _close(self, conn: Any) -> None:
        reading = self.reading.get(conn)
        if reading is not None and reading.stored is not None:
            reading.stored.close()
        self._forget(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Close connections past their read deadline (and, while stopping, idle ones)."""
        super().murder_pending()
        now = time.monotonic()
        for conn, reading in list(self.reading.items()):
            if reading.started and now >= reading.deadline:
                self._answer(conn, _outcome("408 Request Timeout", "timeout",
                                            "the request did not arrive within "
                                            f"{self.read_timeout:g} s (REQUEST_READ_TIMEOUT_S)"))
            elif now >= reading.deadline or (not reading.started and not self.alive):
                self._close(conn)

    # connections with a whole request --------------------------------------------------------

    def handle(self, conn: Any) -> Any:
        """Serve the request read (in a pool thread)."""
        req = None
        try:
            conn.sock.settimeout(self.read_timeout)  # for writing the answer
            req = next(conn.parser)
            if not req:
                return False
            if conn.reading.expect_continue:  # sent already, or the body came without it
                req._expected_100_continue = False
            return self._keepalive_after(conn, self.handle_request(req, conn))
        except (http.errors.NoMoreData, StopIteration, TimeoutError) as exc:
            self.log.debug("closing connection: %s", exc)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as exc:  # noqa: BLE001 - gunicorn answers it (400, 500)
            self.handle_error(req, conn.sock, conn.client, exc)
        return False

    def finish_request(self, conn: Any, fs: Any) -> None:
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:  # noqa: BLE001
            keep = False
        reading: _Reading = conn.reading
        if reading.stored is not None:
            reading.stored.close()
        if not keep or not self.alive:
            self.nr_conns -= 1
            conn.close(graceful=keep)
            return
        try:
            conn.sock.setblocking(False)
            self._read_next(conn, reading.surplus,
                            time.monotonic() + (self.cfg.keepalive or self.read_timeout), True)
        except OSError:
            self._close(conn)

    # stopping --------------------------------------------------------------------------------

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            for listener in self.sockets:
                listener.close()

    def is_parent_alive(self) -> bool:
        if not super().is_parent_alive():
            self.alive = False
            return False
        return True
