"""The audit store on SQLite and on a real PostgreSQL (interfaces.md section 5)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from service.store import (
    SCHEMA_VERSION,
    CheckRecord,
    FindingRecord,
    PersistedIssue,
    Store,
    StoreError,
)
from tests.support.services import free_port

T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url).start(now=T0)
    yield s
    s.close()


def issue(rule: str) -> dict[str, Any]:
    return {"resourceType": "DetectedIssue", "status": "final", "identifier": [
        {"system": "urn:baclofen-check:rule", "value": rule}]}


def record(*rules: str, card: str | None = None, latency: float = 10.0,
           when: datetime = T0, endpoint: str = "MedicationRequest/$check") -> CheckRecord:
    return CheckRecord(
        time=when, caller="token:abc", endpoint=endpoint, hook=None if card is None else
        "order-sign", hook_instance=None if card is None else "hi-1",
        patient_ref="Patient/p1", order_refs=["MedicationRequest/m1"],
        knowledge_version="2026.11.1", latency_ms=latency,
        findings=[FindingRecord(r, "high", f"fid-{r}-{i}", card, issue(r))
                  for i, r in enumerate(rules)],
    )


def test_sqlite_file_is_created_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.sqlite3"
    s = Store(f"sqlite:///{path}").start()
    with s.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        # clinical text: the database and its write-ahead log are the owner's only
        modes = {name: name.stat().st_mode & 0o777 for name in (path, Path(f"{path}-wal"))}
    s.close()
    assert path.exists()
    assert (mode, busy) == ("wal", 5000)  # DB_STATEMENT_TIMEOUT_S, lock waits included
    assert set(modes.values()) == {0o600}, modes


def test_record_check_writes_check_and_findings(store: Store) -> None:
    check_id = store.record_check(record("oral.max-daily", "order.duration"))
    assert check_id >= 1
    assert store.counts()["checks"] == 1
    assert store.counts()["findings"] == 2


def test_failure_inside_the_transaction_leaves_nothing(store: Store) -> None:
    def fail_on_findings(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO FINDINGS"):
            raise RuntimeError("injected failure while writing findings")

    event.listen(store.engine, "before_cursor_execute", fail_on_findings)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            store.record_check(record("oral.max-daily"))
    finally:
        event.remove(store.engine, "before_cursor_execute", fail_on_findings)
    assert store.counts()["checks"] == 0
    assert store.counts()["findings"] == 0


KILLER = textwrap.dedent("""
    import os, signal, sys
    from datetime import UTC, datetime
    from sqlalchemy import event
    from service.store import CheckRecord, FindingRecord, Store
    store = Store(sys.argv[1])
    def die(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO FINDINGS"):
            os.kill(os.getpid(), signal.SIGKILL)
    event.listen(store.engine, "before_cursor_execute", die)
    store.record_check(CheckRecord(datetime.now(UTC), "c", "e", None, None, "Patient/p",
        ["MedicationRequest/m"], "v", 1.0, [FindingRecord("r", "low", "f", None, {})]))
""")


def test_a_process_killed_mid_write_leaves_nothing(store: Store, db_url: str) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLER, db_url], capture_output=True,
                          cwd=Path(__file__).parents[2], check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert store.counts()["checks"] == 0
    assert store.counts()["findings"] == 0
    store.record_check(record("oral.max-daily"))  # the database is still usable
    assert store.counts()["checks"] == 1


def test_jti_replay_is_refused_across_two_stores_sharing_one_database(db_url: str) -> None:
    a, b = Store(db_url).start(), Store(db_url).start()
    expires = datetime.now(UTC) + timedelta(minutes=5)
    assert a.use_jti("https://ehr.example", "jti-1", expires) is True
    assert b.use_jti("https://ehr.example", "jti-1", expires) is False
    assert a.use_jti("https://ehr.example", "jti-1", expires) is False
    assert b.use_jti("https://other.example", "jti-1", expires) is True
    a.close()
    b.close()


def test_retention_purge_removes_old_checks_feedback_and_expired_jtis(db_url: str) -> None:
    s = Store(db_url, retention_days=30).start(now=T0)
    s.record_check(record("oral.max-daily", when=T0 - timedelta(days=31)))
    s.record_check(record("oral.max-daily", when=T0 - timedelta(days=29)))
    s.record_feedback("svc", "old-card", "accepted", [], None, T0 - timedelta(days=40))
    s.use_jti("iss", "old", T0 - timedelta(minutes=1))
    s.use_jti("iss", "live", T0 + timedelta(minutes=1))
    assert s.purge(now=T0) == 1
    assert s.counts() == {"checks": 1, "findings": 1, "feedback": 0, "jti": 1, "persisted": 0}
    s.close()


def test_purge_runs_at_start(db_url: str) -> None:
    s = Store(db_url, retention_days=1).start(now=T0)
    s.record_check(record("oral.max-daily", when=T0 - timedelta(days=3)))
    s.close()
    s2 = Store(db_url, retention_days=1).start(now=T0)
    assert s2.counts()["checks"] == 0
    s2.close()


def test_feedback_joins_to_the_recorded_card(store: Store) -> None:
    store.record_check(record("oral.max-daily", card="card-1"))
    assert store.record_feedback("baclofen-order-sign", "card-1", "overridden", [],
                                 "patient-declined", T0) is True
    assert store.record_feedback("baclofen-order-sign", "no-such-card", "accepted", ["s1"],
                                 None, T0) is False
    assert store.counts()["feedback"] == 2


def test_report_numbers(store: Store) -> None:
    # two native checks with oral.max-daily, latency 10 and 30
    store.record_check(record("oral.max-daily", latency=10))
    store.record_check(record("oral.max-daily", "order.duration", latency=30))
    # one CDS call: oral.max-daily on two findings of ONE card counts once; latency 50
    cds = CheckRecord(T0, "iss", "cds-services/baclofen-order-sign", "order-sign", "hi", None,
                      [], "v", 50, [
                          FindingRecord("oral.max-daily", "high", "f1", "card-A", issue("x")),
                          FindingRecord("oral.max-daily", "high", "f2", "card-A", issue("x")),
                      ])
    store.record_check(cds)
    store.record_check(record("oral.max-daily", card="card-B", latency=70))
    store.record_check(record("oral.max-daily", card="card-C", latency=90))
    store.record_feedback("svc", "card-A", "overridden", [], "benefit-outweighs-risk", T0)
    store.record_feedback("svc", "card-A", "overridden", [], "benefit-outweighs-risk", T0)
    store.record_feedback("svc", "card-B", "overridden", [], "patient-declined", T0)
    store.record_feedback("svc", "card-C", "accepted", ["sugg-1"], None, T0)
    rows = {r.rule_id: r for r in store.report()}
    oral = rows["oral.max-daily"]
    assert oral.fired == 5  # 2 native findings + 3 distinct cards
    assert oral.accepted == 1
    assert oral.overridden == 2
    assert oral.top_override_reasons == [("benefit-outweighs-risk", 1), ("patient-declined", 1)]
    assert oral.median_latency_ms == 50
    dur = rows["order.duration"]
    assert (dur.fired, dur.accepted, dur.overridden, dur.median_latency_ms) == (1, 0, 0, 30)


def test_persisted_bookkeeping_updates_in_place(store: Store) -> None:
    store.record_persisted([PersistedIssue("MedicationRequest/m1", "f1", "bc-f1", "final")], T0)
    store.record_persisted([PersistedIssue("MedicationRequest/m1", "f1", "bc-f1", "cancelled"),
                            PersistedIssue("MedicationRequest/m1", "f2", "bc-f2", "final")], T0)
    assert store.persisted_for_order("MedicationRequest/m1") == [
        PersistedIssue("MedicationRequest/m1", "f1", "bc-f1", "cancelled"),
        PersistedIssue("MedicationRequest/m1", "f2", "bc-f2", "final"),
    ]
    assert store.persisted_for_order("MedicationRequest/other") == []


def test_ping_and_naive_datetimes_refused(store: Store) -> None:
    assert store.ping() is True
    with pytest.raises(Exception, match="timezone-aware"):
        store.use_jti("iss", "j", datetime(2026, 1, 1))  # noqa: DTZ001


def test_migration_is_idempotent_and_refuses_a_newer_schema(db_url: str) -> None:
    s = Store(db_url).start()
    s.migrate()
    with s.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        s.migrate()
    s.close()


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(StoreError, match="sqlite or postgresql"):
        Store("mysql://x/y")


def test_ping_is_false_when_the_database_does_not_answer() -> None:
    s = Store(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    assert s.ping() is False


def test_replicas_starting_together_migrate_once_under_the_lock(db_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait()
            Store(db_url).start().close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = Store(db_url)
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version FROM schema_version").all() == [
            (SCHEMA_VERSION,)]
    s.close()
