"""A FHIR server that keeps sending a body slowly must not hold outbound calls past their
deadline, nor stop other requests' outbound calls (service/outbound/: client.py, pool.py).

A body is read as it comes, with the deadline checked after every read, and a call made while
every pooled worker thread is busy runs on a thread of its own. Real sockets on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from service.fhir_input.fetch import FhirClient
from service.outbound import pool
from service.outbound.deadline import Deadline, FetchFailure
from service.outbound.pool import MAX_PARALLEL, fetch_all
from tests.support.httpstub import serving


@pytest.fixture
def trickling_server() -> Iterator[tuple[str, threading.Event]]:
    stop = threading.Event()

    class _H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            if self.path.endswith("/ok"):
                data = json.dumps({"resourceType": "Patient", "id": "ok"}).encode()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                self.wfile.write(b'{"resourceType":"Patient","text":"')
                while not stop.wait(0.1):  # one byte every 0.1 s, never the whole body
                    self.wfile.write(b"a")
                    self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
    httpd.daemon_threads = True
    with serving(httpd):
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}/fhir", stop
        finally:
            stop.set()


def test_calls_outliving_their_deadline_do_not_starve_a_later_request(
        trickling_server: tuple[str, threading.Event], monkeypatch: pytest.MonkeyPatch) -> None:
    base, stop = trickling_server
    # a small process-wide limit, so that one request's calls fill it (the default, 128, is
    # filled the same way by 8 such requests)
    monkeypatch.setattr(pool, "MAX_IN_FLIGHT", MAX_PARALLEL)
    monkeypatch.setattr(pool, "_shared", pool._Shared())
    client = FhirClient(base, None, [base], 10_000_000)
    try:
        slow = Deadline(0.5)
        first = fetch_all({f"k{n}": (lambda: client.read("Patient/slow", slow))
                           for n in range(MAX_PARALLEL)}, slow)
        assert {getattr(r, "reason", None) for r in first.values()} == {"timeout"}
        time.sleep(0.5)  # every deadline of the first request has passed

        later = Deadline(3)
        second = fetch_all({"patient": lambda: client.read("Patient/ok", later)}, later)
        assert second == {"patient": {"resourceType": "Patient", "id": "ok"}}
    finally:
        stop.set()


def test_a_body_sent_slowly_is_cut_off_at_the_deadline(
        trickling_server: tuple[str, threading.Event]) -> None:
    """The read itself ends at its deadline (its thread is free again), not when the server
    stops sending: a read that waited for a whole 64 KiB chunk never ended here."""
    base, _stop = trickling_server
    client = FhirClient(base, None, [base], 10_000_000)
    outcome: list[Any] = []

    def read() -> None:
        try:
            client.read("Patient/slow", Deadline(0.5))
        except FetchFailure as failure:
            outcome.append(failure)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(15)  # 30 times the deadline: only a read that ignores it is still running
    assert not reader.is_alive(), "the read outlived its deadline"
    assert [f.reason for f in outcome] == ["timeout"]
    assert "was still answering at the 0.5 s deadline" in outcome[0].message


def test_a_call_runs_on_its_own_thread_when_every_pooled_thread_is_stuck(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "MAX_IN_FLIGHT", 4)
    monkeypatch.setattr(pool, "_shared", pool._Shared())
    release = threading.Event()
    try:
        stuck = Deadline(0.2)
        first = fetch_all({f"k{n}": (lambda: release.wait(30)) for n in range(4)}, stuck)
        assert {getattr(r, "reason", None) for r in first.values()} == {"timeout"}
        assert pool._shared.busy == 4  # the four pooled threads are still waiting
        later = Deadline(3)
        second = fetch_all({"a": lambda: "read", "b": lambda: 42}, later)
        assert second == {"a": "read", "b": 42}
    finally:
        release.set()
