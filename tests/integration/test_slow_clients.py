"""`baclofen-check serve` against slow clients and a killed master (service/serving.py).

Real gunicorn with the service's worker class on loopback: connections that send their body
a byte at a time do not take the threads that answer others, a request that does not arrive
within REQUEST_READ_TIMEOUT_S is answered 408, and a master killed with SIGKILL leaves its
port free for a restart at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from service.serving import COMPLETE, MORE, TOO_LARGE, _Reading
from tests.support.builders import dosage, order, parameters
from tests.support.services import _wait_until, free_port

ROOT = Path(__file__).resolve().parents[2]
BODY = json.dumps(parameters(order(dosage(40)))).encode()
CHECK = "/MedicationRequest/$check"


@dataclass
class Served:
    base: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def start(tmp_path: Path, port: int, name: str = "serve", **env: str) -> Served:
    environ = {**os.environ, "API_REQUIRE_AUTH": "false", "CDS_REQUIRE_JWT": "false",
               "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
               "SPOOL_DIR": str(tmp_path / "spool"), "REQUEST_READ_TIMEOUT_S": "2", **env}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--threads", "2"], cwd=ROOT, env=environ, stdout=out,
            stderr=subprocess.STDOUT)
    served = Served(f"http://127.0.0.1:{port}", port, proc, log)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited: " + log.read_text()[-3000:])
        try:
            return requests.get(served.base + "/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    _wait_until(ready, name, attempts=600)
    return served


def stop(served: Served) -> None:
    if served.proc.poll() is None:
        os.kill(served.proc.pid, signal.SIGTERM)
        served.proc.wait(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = start(tmp_path, free_port(), MAX_REQUEST_BYTES="20000", MAX_BATCH_BYTES="30000")
    yield s
    stop(s)


def head(length: int, extra: str = "") -> bytes:
    return (f"POST {CHECK} HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def answer(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    return data


def test_slow_bodies_do_not_take_the_threads_of_normal_calls(served: Served) -> None:
    stop_at = time.monotonic() + 6
    opened = [0]

    def trickle() -> None:  # a byte every 0.2 s, reopened when closed
        while time.monotonic() < stop_at:
            with socket.create_connection(("127.0.0.1", served.port)) as sock:
                opened[0] += 1
                try:
                    sock.sendall(head(len(BODY)))
                    for byte in BODY:
                        if time.monotonic() > stop_at:
                            return
                        sock.send(bytes([byte]))
                        time.sleep(0.2)
                except OSError:
                    pass

    slow = [threading.Thread(target=trickle, daemon=True) for _ in range(24)]
    for t in slow:
        t.start()
    time.sleep(0.5)
    times = []
    while time.monotonic() < stop_at - 0.5:
        started = time.monotonic()
        resp = requests.post(served.base + CHECK, data=BODY, timeout=5, headers={
            "Content-Type": "application/fhir+json", "Connection": "close"})
        times.append(time.monotonic() - started)
        assert resp.status_code == 200
        assert "oral.max-daily" in resp.text
    for t in slow:
        t.join(timeout=10)
    assert len(times) >= 10 and max(times) < 2, times
    assert opened[0] > 24  # the 2 s read timeout closed them, and they came back


def test_a_request_that_does_not_arrive_in_time_is_answered_408(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(head(len(BODY)) + BODY[:10])
        started = time.monotonic()
        data = answer(sock, timeout=10)
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert 1.5 < time.monotonic() - started < 5


def test_a_body_over_max_batch_bytes_is_refused_before_it_is_sent(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(head(10**9))
        data = answer(sock)
    assert data.startswith(b"HTTP/1.1 413 "), data


def test_kept_alive_pipelined_chunked_and_expect_continue(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(head(len(BODY)) + BODY + head(len(BODY)) + BODY)  # two at once
        data = b""
        sock.settimeout(10)
        while data.count(b"HTTP/1.1 200 ") < 2:
            part = sock.recv(65536)
            assert part, data
            data += part
    chunked = (f"POST {CHECK} HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
               "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(chunked)
        assert answer(sock).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        half = len(BODY) // 2
        for part in (BODY[:half], BODY[half:]):
            sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        data = answer(sock)
        assert data.startswith(b"HTTP/1.1 200 "), data
    with requests.Session() as session:  # one connection, several calls
        for _ in range(3):
            assert session.post(served.base + CHECK, data=BODY, timeout=10, headers={
                "Content-Type": "application/fhir+json"}).status_code == 200


def test_a_master_killed_under_load_is_replaced_by_an_immediate_restart(tmp_path: Path) -> None:
    port = free_port()
    first = start(tmp_path, port, "first")
    metrics_dirs = set(Path(tempfile.gettempdir()).glob(
        f"baclofen-check-metrics-{first.proc.pid}-*"))
    assert metrics_dirs
    stop_at = time.monotonic() + 3

    def load() -> None:
        while time.monotonic() < stop_at:
            try:
                requests.post(first.base + CHECK, data=BODY, timeout=2, headers={
                    "Content-Type": "application/fhir+json"})
            except requests.RequestException:
                pass

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    second = start(tmp_path, port, "second")  # at once: fails when the port is still held
    try:
        for t in threads:
            t.join(timeout=10)
        assert requests.post(second.base + CHECK, data=BODY, timeout=10, headers={
            "Content-Type": "application/fhir+json"}).status_code == 200
        assert "Connection in use" not in second.log.read_text()
        assert not any(d.exists() for d in metrics_dirs)  # the dead run's, removed at start
    finally:
        stop(second)


# --- where a request ends ------------------------------------------------------------------------

def test_reading_finds_the_end_of_each_framing() -> None:
    made: list[_Reading] = []

    def reading() -> _Reading:
        made.append(_Reading(0, 100))
        return made[-1]

    try:
        r = reading()
        assert r.feed(head(5)[:20]) == MORE
        assert r.feed(head(5)[20:] + b"abc") == MORE
        assert r.feed(b"deNEXT") == COMPLETE and r.surplus == b"NEXT"
        chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        r = reading()
        assert r.feed(chunked + b"3;x=1\r\nabc\r\n") == MORE
        assert r.feed(b"0\r\nTrailer: 1\r\n\r\nGET") == COMPLETE and r.surplus == b"GET"
        assert reading().feed(chunked + b"65\r\n") == TOO_LARGE  # 101 bytes announced
        assert reading().feed(head(101)) == TOO_LARGE
        r = reading()
        assert r.feed(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y") == COMPLETE
        assert r.surplus == b"GET /y"
    finally:
        for r in made:
            if r.stored is not None:
                r.stored.close()
