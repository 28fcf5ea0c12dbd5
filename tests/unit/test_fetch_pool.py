"""The outbound client's kept-alive connections and shared worker threads: reused across
calls, never shared with a forked child, closed after a body not read to its end, a GET sent
once more when a kept-alive connection was closed under it (a write never), and each request's
parallel calls capped at MAX_PARALLEL. Real sockets on loopback, no mocks."""

from __future__ import annotations

import json
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from service.fhir_input.fetch import FhirClient
from service.outbound import pool
from service.outbound.deadline import Deadline, FetchFailure
from service.outbound.pool import MAX_PARALLEL, fetch_all
from tests.support.httpstub import serving
from tests.support.services import free_port


class KeepAliveServer:
    """An HTTP/1.1 server that keeps connections open. ``/fhir/Patient/port`` answers a
    Patient whose id is the client's port (one port, one connection); ``/fhir/Patient/big``
    answers more than the client accepts. With ``drop_second`` the second request on any
    connection is read and the connection closed without an answer (as a server closing an
    idle connection just as it is reused)."""

    def __init__(self, drop_second: bool = False) -> None:
        self.requests: list[tuple[str, int]] = []  # (method, client port)
        self.paths: list[str] = []
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.seen = 0

            def _any(self) -> None:
                self.seen += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.requests.append((self.command, self.client_address[1]))
                server.paths.append(self.path)
                if drop_second and self.seen == 2:
                    self.close_connection = True
                    return
                if self.path.endswith("/big"):
                    data = b'{"resourceType":"Patient","text":"' + b"a" * 300_000 + b'"}'
                else:
                    data = json.dumps({"resourceType": "Patient" if self.command == "GET"
                                       else "Bundle", "id": str(self.client_address[1])}
                                      ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _any  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/fhir"

    def client(self, max_bytes: int = 100_000) -> FhirClient:
        """A new client, as each hook call makes one."""
        return FhirClient(self.base, "secret-token", [self.base], max_bytes)


@contextmanager
def keep_alive_server(drop_second: bool = False) -> Iterator[KeepAliveServer]:
    server = KeepAliveServer(drop_second)
    with serving(server.httpd):
        yield server


def _port(client: FhirClient) -> str:
    return str(client.read("Patient/port", Deadline(10))["id"])


def test_one_connection_serves_calls_from_different_clients() -> None:
    with keep_alive_server() as server:
        ports = {_port(server.client()) for _ in range(5)}
        assert len(ports) == 1
        assert len(server.requests) == 5


def test_a_body_not_read_to_its_end_closes_its_connection() -> None:
    with keep_alive_server() as server:
        first = _port(server.client())
        with pytest.raises(FetchFailure) as err:
            server.client().read("Patient/big", Deadline(10))
        assert err.value.reason == "too-large"
        after = _port(server.client())
        assert after != first  # the connection with unread bytes was not reused
        assert _port(server.client()) == after  # a fully read one is


def test_a_forked_child_does_not_share_its_parents_connections() -> None:
    with keep_alive_server() as server:
        parent_port = _port(server.client())
        fetch_all({"warm": lambda: _port(server.client())}, Deadline(10))  # threads exist
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:  # the child: report its ports and leave without running pytest's exit
            code = 1
            try:
                signal.alarm(60)  # a child that hung would end here, failing the test
                os.close(read_end)
                client = server.client()
                got = fetch_all({"a": lambda: _port(client)}, Deadline(10))
                os.write(write_end, json.dumps([_port(client), got["a"]]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            child_ports = json.loads(pipe.read() or b"null")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert child_ports is not None and parent_port not in child_ports
        # the parent's kept-alive connection still works, untouched by the child
        assert _port(server.client()) == parent_port


def test_a_read_on_a_connection_closed_under_it_is_sent_once_more() -> None:
    with keep_alive_server(drop_second=True) as server:
        first = _port(server.client())
        second = _port(server.client())  # the reused connection is dropped: a new one
        assert second != first
        assert [m for m, _ in server.requests] == ["GET", "GET", "GET"]
        assert [p for _, p in server.requests] == [int(first), int(first), int(second)]


def test_a_write_on_a_connection_closed_under_it_is_not_sent_again() -> None:
    with keep_alive_server(drop_second=True) as server:
        _port(server.client())
        with pytest.raises(FetchFailure) as err:
            server.client().transaction({"resourceType": "Bundle", "type": "transaction"},
                                        Deadline(10))
        assert err.value.reason == "refused"
        assert [m for m, _ in server.requests] == ["GET", "POST"]


def test_a_refused_connection_is_not_retried() -> None:
    base = f"http://127.0.0.1:{free_port()}/fhir"
    with pytest.raises(FetchFailure) as err:
        FhirClient(base, None, [base], 1000).read("Patient/1", Deadline(5))
    assert err.value.reason == "refused"


def _no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_the_environments_proxy_is_used_with_kept_alive_connections(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxy_settings(monkeypatch)
    with keep_alive_server() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base.removesuffix("/fhir"))
        base = "http://ehr.invalid/fhir"
        ports = {FhirClient(base, "t", [base], 100_000).read("Patient/port", Deadline(10))["id"]
                 for _ in range(2)}
        assert proxy.paths == ["http://ehr.invalid/fhir/Patient/port"] * 2
        assert len(ports) == 1


def test_a_host_in_no_proxy_is_called_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxy_settings(monkeypatch)
    with keep_alive_server() as proxy, keep_alive_server() as server:
        monkeypatch.setenv("HTTP_PROXY", proxy.base.removesuffix("/fhir"))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        _port(server.client())
        assert (proxy.paths, server.paths) == ([], ["/fhir/Patient/port"])


def test_one_request_runs_at_most_max_parallel_calls_at_once() -> None:
    lock = threading.Lock()
    active = 0
    peak = 0
    together = threading.Barrier(MAX_PARALLEL, timeout=30)

    def call(n: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            if n < MAX_PARALLEL:
                together.wait()  # the first MAX_PARALLEL calls are all running at once
            return n
        finally:
            with lock:
                active -= 1

    calls = {f"c{n}": (lambda n=n: call(n)) for n in range(MAX_PARALLEL + 4)}
    results = fetch_all(calls, Deadline(60))
    assert results == {f"c{n}": n for n in range(MAX_PARALLEL + 4)}
    assert peak == MAX_PARALLEL


def test_the_worker_threads_and_connections_are_made_once_per_process() -> None:
    with keep_alive_server() as server:
        fetch_all({"a": lambda: _port(server.client())}, Deadline(10))
        shared = pool._shared
        executor, adapter = shared.executor, shared.adapter
        fetch_all({"b": lambda: _port(server.client())}, Deadline(10))
        assert executor is not None and adapter is not None
        assert (pool._shared.executor, pool._shared.adapter) == (executor, adapter)
