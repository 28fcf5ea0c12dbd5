"""Nothing lost: the spool (service/spool.py), record ids, bounded store waits and /readyz.

The faults are real: a dropped table, a SQLite file locked by another process, a PostgreSQL
server behind a stand-in proxy that stops forwarding (what a frozen server looks like to its
clients), a process killed with its spool not yet replayed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service import create_app, metrics
from service.cli import main
from service.spool import Spool, encode, read_frames
from service.store import CheckRecord, FindingRecord, Store, get_store, metadata, record_answered
from tests.support.builders import dosage, order, parameters
from tests.support.cdsclient import hook_call
from tests.support.checks import AUTH, TOKEN, post_check
from tests.support.services import Postgres, _wait_until

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)


def record(n: int = 1, rule: str = "oral.max-daily") -> CheckRecord:
    issue = {"resourceType": "DetectedIssue", "status": "final", "detail": "x" * 300}
    return CheckRecord(time=T0, caller="token:abc", endpoint="MedicationRequest/$check",
                       hook=None, hook_instance=None, patient_ref=f"Patient/p{n}",
                       order_refs=[f"MedicationRequest/m{n}"], knowledge_version="k",
                       latency_ms=1.5, findings=[FindingRecord(rule, "high", f"f{n}", None,
                                                               issue)],
                       record_id=f"rec-{n}")


def counted(outcome: str) -> float:
    value: float = metrics.AUDIT_FAILURES.labels(outcome)._value.get()
    return value


def make_app(tmp_path: Path, **extra: Any) -> Flask:
    return create_app({"API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN, "CDS_REQUIRE_JWT": False,
                       "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
                       "SPOOL_DIR": str(tmp_path / "spool"), "TESTING": True, **extra})


# --- the file ---------------------------------------------------------------------------------

def test_records_round_trip_and_a_torn_last_frame_ends_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.spool"
    path.write_bytes(encode(record(1)) + encode(record(2)) + encode(record(3))[:-5])
    got = [r for _end, r in read_frames(path)]
    assert [r.record_id for r in got] == ["rec-1", "rec-2"]
    assert got[0] == record(1)  # every field, the DetectedIssue JSON and the aware time too


def test_spooled_records_are_replayed_in_order_and_once(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/a.sqlite3").start()
    spool = Spool(tmp_path / "spool", 10**8, store.url).open()
    for n in (1, 2, 3):
        assert spool.append(record(n))
    assert spool.pending
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in spool.files()} == {0o600}
    result = spool.replay(store)
    assert (result.replayed, result.already, result.waiting) == (3, 0, False)
    assert not spool.pending and spool.files() == []
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT patient_ref FROM checks ORDER BY id").all()
    assert [r[0] for r in rows] == ["Patient/p1", "Patient/p2", "Patient/p3"]
    # the same records again (a retry, or a spool replayed twice) are not recorded again
    assert spool.append(record(2))
    result = spool.replay(store)
    assert (result.replayed, result.already) == (0, 1)
    assert store.counts()["checks"] == 3 and store.counts()["findings"] == 3


WRITER = textwrap.dedent("""
    import os, signal, sys
    from datetime import UTC, datetime
    from service.spool import Spool
    from service.store import CheckRecord
    spool = Spool(sys.argv[1], 10**8, sys.argv[2]).open()
    for n in range(5):
        spool.append(CheckRecord(datetime.now(UTC), "c", "e", None, None, f"Patient/{n}",
                                 ["MedicationRequest/m"], "v", 1.0, [], f"dead-{n}"))
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_the_spool_of_a_killed_process_is_replayed_by_the_next_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a.sqlite3"
    Store(url).start().close()
    proc = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path / "spool"), url],
                          cwd=ROOT, capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    app = create_app({"API_REQUIRE_AUTH": False, "DATABASE_URL": url, "TESTING": True,
                      "SPOOL_DIR": str(tmp_path / "spool")})
    store = get_store(app)
    _wait_until(lambda: store.counts()["checks"] == 5, "the dead process's records")
    assert store.spool is not None
    _wait_until(lambda: not store.spool.files(), "the replayed file removed")  # type: ignore
    # its reserve file went too: what is left is this process's
    reserves = [p.name for p in (tmp_path / "spool").glob(".reserve-*")]
    assert all(name.endswith(f"-{os.getpid()}") for name in reserves), reserves


def test_another_stores_spool_is_left_alone(tmp_path: Path) -> None:
    mine = Store(f"sqlite:///{tmp_path}/a.sqlite3").start()
    other = Spool(tmp_path / "spool", 10**8, "sqlite:///elsewhere.sqlite3").open()
    assert other.append(record(1))
    result = Spool(tmp_path / "spool", 10**8, mine.url).open().replay(mine)
    assert (result.replayed, result.files) == (0, 0)
    assert mine.counts()["checks"] == 0


# --- the service --------------------------------------------------------------------------------

def test_a_check_the_store_cannot_take_is_spooled_then_replayed(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    client = app.test_client()
    store = get_store(app)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE record_ids")
    spooled, lost = counted("spooled"), counted("lost")
    resp = post_check(client, parameters(order(dosage(40))))
    assert resp.status_code == 200
    assert counted("spooled") == spooled + 1 and counted("lost") == lost
    assert store.spool is not None and store.spool.pending
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "store call" in ready.get_json()["reason"]  # failing, or failed a moment ago
    assert ready.get_json()["spool"]["waiting"] is True
    # the store still failing, the next answered check is spooled too
    assert post_check(client, parameters(order(dosage(5)))).status_code == 200
    assert counted("spooled") == spooled + 2
    metadata.create_all(store.engine)  # the store takes writes again
    _wait_until(lambda: not store.spool.pending, "the replay")  # type: ignore[union-attr]
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT c.latency_ms, count(f.id) FROM checks c LEFT JOIN "
                                    "findings f ON f.check_id = c.id GROUP BY c.id "
                                    "ORDER BY c.id").all()
    assert len(rows) == 2
    assert rows[0][1] >= 1  # 120 mg/day: the first check's oral.max-daily finding was kept
    assert client.get("/readyz").status_code in (200, 503)  # 503 until RECENT_FAILURE_S passed


def test_a_retried_call_is_recorded_once(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    client = app.test_client()
    body = parameters(order(dosage(40)))
    for _ in range(2):  # the same request id and body: a retry
        assert post_check(client, body, headers={"X-Request-ID": "retry-1"}).status_code == 200
    assert post_check(client, body, headers={"X-Request-ID": "retry-2"}).status_code == 200
    assert post_check(client, parameters(order(dosage(5))),
                      headers={"X-Request-ID": "retry-1"}).status_code == 200
    assert post_check(client, body).status_code == 200  # no request id: each call is new
    assert get_store(app).counts()["checks"] == 4
    call = hook_call(order(dosage(40), id="o1"))
    for _ in range(2):  # the same hookInstance and body
        assert client.post("/cds-services/baclofen-order-sign", json=call).status_code == 200
    assert get_store(app).counts()["checks"] == 5


def test_ndjson_lines_of_a_retried_batch_are_recorded_once(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    client = app.test_client()
    same = json.dumps(parameters(order(dosage(40))))
    body = "\n".join([same, same, json.dumps(parameters(order(dosage(5))))]) + "\n"
    for _ in range(2):
        resp = client.post("/MedicationRequest/$check", data=body, headers={
            **AUTH, "Content-Type": "application/fhir+ndjson", "X-Request-ID": "batch-1"})
        assert len(resp.get_data(as_text=True).splitlines()) == 3
    assert get_store(app).counts()["checks"] == 3  # two equal lines are two lines


def test_a_record_neither_store_nor_spool_takes_is_logged_with_its_references(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "not-a-dir").write_text("")
    app = make_app(tmp_path, SPOOL_DIR=str(tmp_path / "not-a-dir" / "spool"))
    store = get_store(app)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE findings")
    lost = counted("lost")
    with caplog.at_level(logging.ERROR, logger="baclofen_check"):
        resp = post_check(app.test_client(), parameters(order(dosage(40), id="ord-9")),
                          headers={"X-Request-ID": "req-lost"})
    assert resp.status_code == 200
    assert counted("lost") == lost + 1
    [line] = [r for r in caplog.records if getattr(r, "event", "") == "audit-lost"]
    assert line.request_id == "req-lost"  # type: ignore[attr-defined]
    assert line.order_refs == ["MedicationRequest/ord-9"]  # type: ignore[attr-defined]
    assert line.patient_ref is None or line.patient_ref.startswith("Patient/")  # type: ignore


def test_readyz_is_503_when_the_spool_is_over_its_size(tmp_path: Path) -> None:
    app = make_app(tmp_path, SPOOL_MAX_BYTES=100)
    store = get_store(app)
    assert app.test_client().get("/readyz").status_code == 200
    other = Spool(tmp_path / "spool", 100, "sqlite:///another-store.sqlite3").open()
    assert other.append(record(1))
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["reason"] == "spool over SPOOL_MAX_BYTES"
    assert resp.get_json()["spool"]["bytes"] > 100
    assert store.spool is not None


# --- bounded waits --------------------------------------------------------------------------

LOCKER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(30)
""")


def test_a_locked_sqlite_store_is_waited_on_at_most_the_statement_timeout(
        tmp_path: Path) -> None:
    app = make_app(tmp_path, DB_STATEMENT_TIMEOUT_S=1)
    client = app.test_client()
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, f"{tmp_path}/audit.sqlite3"],
                              stdout=subprocess.PIPE)
    try:
        assert locker.stdout is not None and locker.stdout.readline() == b"locked\n"
        spooled = counted("spooled")
        started = time.monotonic()
        assert post_check(client, parameters(order(dosage(40)))).status_code == 200
        assert time.monotonic() - started < 3
        assert counted("spooled") == spooled + 1
        started = time.monotonic()
        assert post_check(client, parameters(order(dosage(5)))).status_code == 200
        assert time.monotonic() - started < 0.5  # the next one does not wait again
        started = time.monotonic()
        assert client.get("/readyz").status_code == 503
        assert time.monotonic() - started < 1
    finally:
        locker.kill()
        locker.wait()
        if locker.stdout is not None:
            locker.stdout.close()
    _wait_until(lambda: get_store(app).counts()["checks"] == 2, "the replay", attempts=400)


class FreezingProxy:
    """A TCP forwarder in front of PostgreSQL that can stop forwarding: to its clients, a
    server that no longer answers (what SIGSTOP does to a server)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.02)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            src.close()  # the other direction's thread closes dst


@pytest.fixture
def frozen_postgres(postgres: Postgres) -> Iterator[tuple[str, FreezingProxy]]:
    url = postgres.new_database()
    proxy = FreezingProxy(postgres.port)
    yield url.replace(f":{postgres.port}/", f":{proxy.port}/"), proxy
    proxy.frozen.clear()
    proxy.listener.close()


def test_a_frozen_postgresql_costs_one_statement_timeout_then_nothing(
        tmp_path: Path, frozen_postgres: tuple[str, FreezingProxy]) -> None:
    url, proxy = frozen_postgres
    app = create_app({"API_REQUIRE_AUTH": False, "DATABASE_URL": url, "TESTING": True,
                      "SPOOL_DIR": str(tmp_path / "spool"), "DB_STATEMENT_TIMEOUT_S": 1})
    client = app.test_client()
    store = get_store(app)
    assert client.get("/readyz").status_code == 200
    proxy.frozen.set()
    spooled = counted("spooled")
    times = []
    for dose in (40, 5, 10):
        started = time.monotonic()
        assert client.post("/MedicationRequest/$check", json=parameters(order(dosage(dose))),
                           headers={"Content-Type": "application/fhir+json"}).status_code == 200
        times.append(time.monotonic() - started)
    assert times[0] < 2.5 and max(times[1:]) < 0.5, times
    assert counted("spooled") == spooled + 3
    started = time.monotonic()
    ready = client.get("/readyz")
    assert time.monotonic() - started < 1.0
    assert ready.status_code == 503
    proxy.frozen.clear()
    _wait_until(lambda: store.counts()["checks"] == 3, "the replay", attempts=600)
    assert store.spool is not None and not store.spool.pending


def test_record_answered_without_a_store_says_so() -> None:
    assert record_answered(None, record()) is False


def test_an_existing_world_readable_sqlite_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    Store(f"sqlite:///{path}").start().close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_spool_replay_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/a.sqlite3"
    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path / "spool"), url], cwd=ROOT,
                   capture_output=True, check=False)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SPOOL_DIR", str(tmp_path / "spool"))
    assert main(["spool", "replay"]) == 0
    assert capsys.readouterr().out == ("replayed 5 records (0 recorded before) from 1 files; "
                                       "0 files held by running processes\n")
    assert Store(url).counts()["checks"] == 5
    assert main(["spool", "replay"]) == 0  # nothing left: nothing again


def test_feedback_while_the_store_is_failing_is_a_503_to_retry(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    store = get_store(app)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE feedback")
    resp = app.test_client().post("/cds-services/baclofen-order-sign/feedback", json={
        "feedback": [{"card": "card-1", "outcome": "accepted",
                      "outcomeTimestamp": "2026-11-25T10:00:00Z"}]})
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "5"
    assert resp.get_json()["issue"][0]["code"] == "transient"
