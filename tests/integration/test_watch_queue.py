"""The watch queue (service/watch/queue.py) on SQLite and on a real PostgreSQL: coalescing,
one re-check per patient at a time, leases, retries with backoff, and what was seen."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from service.store import Store, open_store
from service.watch.queue import (
    LEASE_S,
    MAX_ATTEMPTS,
    FindingChange,
    Trigger,
    WatchStore,
    backoff_s,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def ws(db_url: str) -> Iterator[WatchStore]:
    store: Store = open_store(db_url)
    try:
        yield WatchStore(store).create().create()  # a second create finds the tables
    finally:
        store.close()


def trig(n: int, at: datetime = T0) -> Trigger:
    return Trigger("notification", f"Observation/o{n}/_history/1", at, None)


def test_events_for_a_waiting_patient_merge_within_the_window(ws: WatchStore) -> None:
    assert ws.enqueue("Patient/a", trig(1), T0, coalesce_s=30)
    assert not ws.enqueue("Patient/a", trig(2), T0 + timedelta(seconds=10), coalesce_s=30)
    assert ws.enqueue("Patient/b", trig(3), T0 + timedelta(seconds=11), coalesce_s=30)
    rows = ws.entries()
    assert [(r["patient_ref"], r["events"]) for r in rows] == [("Patient/a", 2), ("Patient/b", 1)]
    assert [t["resource"] for t in rows[0]["triggers"]] == ["Observation/o1/_history/1",
                                                            "Observation/o2/_history/1"]
    # past the window the waiting entry stops absorbing: a new entry waits behind it
    assert ws.enqueue("Patient/a", trig(4), T0 + timedelta(seconds=31), coalesce_s=30)
    assert ws.depth()["pending"] == 3


def test_one_recheck_per_patient_at_a_time_and_an_event_while_running_waits(
        ws: WatchStore) -> None:
    ws.enqueue("Patient/a", trig(1), T0, coalesce_s=0)
    ws.enqueue("Patient/a", trig(2), T0 + timedelta(seconds=1), coalesce_s=0)
    assert len(ws.entries()) == 2        # the first stopped absorbing (no coalescing window)
    now = T0 + timedelta(seconds=2)
    first = ws.claim("w1", now)
    assert first is not None and first.patient_ref == "Patient/a" and first.attempts == 1
    # starting, it takes the other waiting entry: it reads the record after both events
    assert (first.events, [t["resource"] for t in first.triggers]) == (
        2, ["Observation/o1/_history/1", "Observation/o2/_history/1"])
    assert len(ws.entries()) == 1
    ws.enqueue("Patient/b", trig(9), now, coalesce_s=0)
    assert ws.claim("w2", now).patient_ref == "Patient/b"  # type: ignore[union-attr]
    # an event arriving while the re-check runs is not merged into it: it waits
    assert ws.enqueue("Patient/a", trig(3), now, coalesce_s=30)
    assert ws.claim("w3", now) is None           # the same patient is being checked
    ws.record_result(first, "w1", now, ["MedicationRequest/m"], [FindingChange(
        "MedicationRequest/m", "f1", "oral.max-daily", "high", "new", "bc-f1", None)])
    second = ws.claim("w2", now)
    assert second is not None and second.id != first.id
    assert [r["outcome"] for r in ws.rechecks("Patient/a")] == ["done"]
    assert [(f["finding_id"], f["change"]) for f in ws.findings("Patient/a")] == [("f1", "new")]
    assert ws.depth() == {"pending": 0, "running": 2, "failed": 0}


def test_a_killed_workers_entry_is_taken_over_after_its_lease(ws: WatchStore) -> None:
    ws.enqueue("Patient/a", trig(1), T0, coalesce_s=30)
    taken = ws.claim("dead-worker", T0)
    assert taken is not None
    assert ws.claim("w2", T0 + timedelta(seconds=LEASE_S - 1)) is None
    again = ws.claim("w2", T0 + timedelta(seconds=LEASE_S + 1))
    assert again is not None and again.id == taken.id and again.attempts == 2
    assert not ws.renew(taken, "dead-worker", T0 + timedelta(seconds=LEASE_S + 1))
    assert ws.renew(again, "w2", T0 + timedelta(seconds=LEASE_S + 1))
    # the dead worker's late result does not remove the entry the new owner holds
    with ws.engine.begin() as conn:
        ws.complete(conn, taken, "dead-worker")
    assert len(ws.entries()) == 1
    ws.record_result(again, "w2", T0 + timedelta(seconds=LEASE_S + 2), [], [])
    assert ws.entries() == []


def test_a_failed_recheck_waits_longer_each_time_then_stays_failed(ws: WatchStore) -> None:
    ws.enqueue("Patient/a", trig(1), T0, coalesce_s=30)
    now = T0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        entry = ws.claim("w", now)
        assert entry is not None and entry.attempts == attempt
        state = ws.fail(entry, "w", "the FHIR server could not be reached", now)
        assert state == ("failed" if attempt == MAX_ATTEMPTS else "pending")
        if state == "pending":
            assert ws.claim("w", now + timedelta(seconds=backoff_s(attempt) - 1)) is None
        now += timedelta(seconds=backoff_s(attempt) + 1)
    assert ws.claim("w", now + timedelta(days=1)) is None
    assert ws.depth()["failed"] == 1
    assert ws.entries()[0]["last_error"] == "the FHIR server could not be reached"
    # a new event still gets the patient checked
    assert ws.enqueue("Patient/a", trig(2), now, coalesce_s=30)
    assert ws.claim("w", now) is not None


def test_workers_racing_never_check_one_patient_twice_at_once(ws: WatchStore) -> None:
    for n in range(6):   # two waiting entries per patient (no coalescing)
        ws.enqueue(f"Patient/p{n % 3}", trig(n), T0 + timedelta(seconds=n), coalesce_s=0)
    now = T0 + timedelta(seconds=10)
    claimed: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def take(name: str) -> None:
        try:
            start.wait()
            entry = ws.claim(name, now)
            if entry is not None:
                claimed.append(entry.patient_ref)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(claimed) == ["Patient/p0", "Patient/p1", "Patient/p2"]


def test_unseen_remembers_what_was_brought(ws: WatchStore) -> None:
    ws.enqueue("Patient/a", trig(1), T0, 30, seen=("Observation/o1", "1"))
    new = ws.unseen([("Observation/o1", "1"), ("Observation/o1", "2"), ("Observation/o2", "1")],
                    T0)
    assert new == {("Observation/o1", "2"), ("Observation/o2", "1")}
    assert ws.unseen([("Observation/o2", "1")], T0) == set()


def test_one_turn_per_period_for_all_workers(ws: WatchStore) -> None:
    assert ws.take_turn("check", 60, T0)
    assert not ws.take_turn("check", 60, T0 + timedelta(seconds=59))
    assert ws.take_turn("check", 60, T0 + timedelta(seconds=60))
