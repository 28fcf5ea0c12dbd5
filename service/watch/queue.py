"""The watch's durable state, in the store's database (SQLite or PostgreSQL, one code path).

choice: a queue table of our own, not a job-queue library. What the watch needs is one
waiting re-check per patient that absorbs the events arriving while it waits, never two
re-checks of one patient at once, and the same behaviour on SQLite (one host) and PostgreSQL
(several hosts). The libraries that keep their jobs in a database serve one back end only
(procrastinate, pgqueuer, pq, pgmq: PostgreSQL; litequeue, persist-queue: SQLite), need a
second database layer (huey's SQL storage is peewee) or a broker (rq, saq, dramatiq, celery);
procrastinate's ``queueing_lock``/``lock`` are the semantics wanted here, for PostgreSQL only.
A table written with SQLAlchemy Core on the store's engine gives both back ends one code path,
one transaction with the audit store and no new service to run.

Tables (created at start, idempotently, under the store's schema lock):

- ``watch_queue``: one row per waiting or running re-check. ``open`` is 1 while a waiting
  entry absorbs events (at most one per patient, a unique index on (patient, open): NULLs
  never collide), and NULL once it runs or has waited ``WATCH_COALESCE_S``. A re-check that
  starts takes the patient's other waiting entries with it (it reads the record after their
  events). ``state`` is
  ``pending``, ``running`` (a lease: ``lease_owner`` until ``lease_until``; a unique partial
  index allows one running entry per patient, so two workers on two hosts never check one
  patient at once) or ``failed`` (retries used up; kept for the operator). An entry is deleted
  only in the transaction that records its re-check's result: at least once.
- ``watch_seen``: the resource versions notifications brought (a catch-up queues only what no
  notification brought).
- ``watch_state``: small named values: the catch-up cursors (the server's ``lastUpdated`` of
  the newest resource a catch-up saw, per subscribed criteria), worker heartbeats, and the
  time of the last Subscription check.
- ``watch_rechecks`` and ``watch_findings``: what each re-check found, for the worklist: per
  re-check its patient, orders, triggers and outcome; per finding ``new``, ``unchanged`` or
  ``cancelled`` with the DetectedIssue's id on the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..store import _ID, _LOCK_KEY, Store, UTCDateTime

metadata = MetaData()
# choice: the triggers kept per entry (the first ones; ``events`` counts them all)
MAX_TRIGGERS = 20
# choice: retries with doubling waits, 5 s up to 5 min, eight attempts in all (about 10
# minutes: a FHIR server restart is covered); then the entry stays as ``failed``
MAX_ATTEMPTS = 8
BACKOFF_FIRST_S = 5.0
BACKOFF_MAX_S = 300.0
# choice: a re-check reads and writes within a few OUTBOUND_TIMEOUT_S deadlines; a lease this
# long is never reached by a live worker, and a killed worker's entry is taken over after it
LEASE_S = 120.0
# choice: a worker not heard of for a day is forgotten (each process has an id of its own)
HEARTBEAT_KEEP = timedelta(days=1)
# choice: a notification's version is remembered for this long (catch-ups look back less)
SEEN_KEEP = timedelta(days=2)

watch_queue = Table(
    "watch_queue", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("patient_ref", String(500), nullable=False),
    Column("state", String(16), nullable=False),
    Column("open", Integer),
    Column("created", UTCDateTime, nullable=False),
    Column("absorb_until", UTCDateTime, nullable=False),
    Column("not_before", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("events", Integer, nullable=False, default=1),
    Column("triggers", JSON, nullable=False),
    Column("lease_owner", String(200)),
    Column("lease_until", UTCDateTime),
    Column("last_error", String(500)),
    Index("ix_watch_queue_due", "state", "not_before", "id"),
    Index("ix_watch_queue_patient", "patient_ref"),
    Index("uq_watch_queue_open", "patient_ref", "open", unique=True),
    Index("uq_watch_queue_running", "patient_ref", unique=True,
          sqlite_where=text("state = 'running'"), postgresql_where=text("state = 'running'")),
)

watch_seen = Table(
    "watch_seen", metadata,
    Column("resource", String(300), primary_key=True),
    Column("version", String(100), primary_key=True),
    Column("seen", UTCDateTime, nullable=False, index=True),
)

watch_state = Table(
    "watch_state", metadata,
    Column("key", String(300), primary_key=True),
    Column("value", String(2000)),
    Column("updated", UTCDateTime, nullable=False),
)

watch_rechecks = Table(
    "watch_rechecks", metadata,
    Column("id", String(36), primary_key=True),
    Column("time", UTCDateTime, nullable=False, index=True),
    Column("patient_ref", String(500), nullable=False, index=True),
    Column("order_refs", JSON, nullable=False),
    Column("triggers", JSON, nullable=False),
    Column("events", Integer, nullable=False),
    Column("first_event", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),   # done | failed
    Column("error", String(500)),
)

watch_findings = Table(
    "watch_findings", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("recheck_id", String(36), nullable=False, index=True),
    Column("time", UTCDateTime, nullable=False),
    Column("patient_ref", String(500), nullable=False, index=True),
    Column("order_ref", String(500), nullable=False),
    Column("finding_id", String(200), nullable=False, index=True),
    Column("rule_id", String(200), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("change", String(16), nullable=False),    # new | unchanged | cancelled
    Column("server_id", String(200)),
    Column("detected_issue", JSON),
)


@dataclass(frozen=True)
class Trigger:
    """What made a re-check due: a notification (``kind`` ``notification``, the resource it
    carried), a catch-up (``catch-up``, the resource it found), a ping or a manual request."""

    kind: str
    resource: str | None       # Type/id/_history/version, or Type/id
    received: datetime
    last_updated: str | None = None   # the resource's meta.lastUpdated, as the server wrote it

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "resource": self.resource,
                "received": self.received.isoformat(), "lastUpdated": self.last_updated}


@dataclass
class Entry:
    id: int
    patient_ref: str
    attempts: int
    events: int
    created: datetime
    triggers: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class FindingChange:
    order_ref: str
    finding_id: str
    rule_id: str
    severity: str
    change: str
    server_id: str | None
    detected_issue: dict[str, Any] | None


def backoff_s(attempts: int) -> float:
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempts - 1)))


class WatchStore:
    """The watch's tables on the store's engine."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    # --- schema -------------------------------------------------------------------------------

    def create(self) -> WatchStore:
        """Create the tables that do not exist (idempotent; under the store's schema lock on
        PostgreSQL, in one ``BEGIN IMMEDIATE`` transaction on SQLite)."""
        with self.store._writer(), self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            metadata.create_all(conn, checkfirst=True)
        return self

    # --- the queue ----------------------------------------------------------------------------

    def enqueue(self, patient_ref: str, trigger: Trigger, now: datetime, coalesce_s: float,
                seen: tuple[str, str] | None = None) -> bool:
        """Queue a re-check of the patient, merged into its waiting entry when one still
        absorbs events. ``seen`` (resource, version) is remembered in the same transaction.
        Returns True when a new entry was made."""
        for attempt in range(5):
            try:
                with self.store._writer(), self.engine.begin() as conn:
                    if seen is not None:
                        self._remember(conn, [seen], now)
                    return self._enqueue(conn, patient_ref, trigger, now, coalesce_s)
            except IntegrityError:
                if attempt == 4:
                    raise
        return False  # pragma: no cover - the loop returns or raises

    def _enqueue(self, conn: Connection, patient_ref: str, trigger: Trigger, now: datetime,
                 coalesce_s: float) -> bool:
        q = watch_queue.c
        conn.execute(update(watch_queue).where(
            q.patient_ref == patient_ref, q.open == 1,
            or_(q.absorb_until <= now, q.state != "pending")).values(open=None))
        row = conn.execute(select(q.id, q.triggers).where(
            q.patient_ref == patient_ref, q.open == 1).with_for_update()).first()
        if row is not None:
            triggers = list(row.triggers or [])
            if len(triggers) < MAX_TRIGGERS:
                triggers.append(trigger.as_json())
            conn.execute(update(watch_queue).where(q.id == row.id).values(
                events=q.events + 1, triggers=triggers))
            return False
        conn.execute(insert(watch_queue).values(
            patient_ref=patient_ref, state="pending", open=1, created=now,
            absorb_until=now + timedelta(seconds=coalesce_s), not_before=now, attempts=0,
            events=1, triggers=[trigger.as_json()]))
        return True

    def claim(self, owner: str, now: datetime) -> Entry | None:
        """Take the oldest due entry whose patient no other worker is checking (an expired
        lease counts as due), or None."""
        q = watch_queue.c
        other = watch_queue.alias("other")
        busy = select(other.c.id).where(
            other.c.patient_ref == q.patient_ref, other.c.state == "running",
            other.c.lease_until > now, other.c.id != q.id).exists()
        skip: list[int] = []
        for _ in range(20):
            due = or_(and_(q.state == "pending", q.not_before <= now),
                      and_(q.state == "running", q.lease_until <= now))
            query = select(q.id, q.patient_ref, q.attempts, q.events, q.created, q.triggers) \
                .where(due, ~busy, q.id.not_in(skip) if skip else true()) \
                .order_by(q.id).limit(1).with_for_update(skip_locked=True)
            row = None
            try:
                with self.store._writer(), self.engine.begin() as conn:
                    row = conn.execute(query).first()
                    if row is None:
                        return None
                    done = conn.execute(update(watch_queue).where(q.id == row.id, due).values(
                        state="running", open=None, lease_owner=owner,
                        lease_until=now + timedelta(seconds=LEASE_S),
                        attempts=q.attempts + 1))
                    if done.rowcount != 1:
                        continue  # another worker took it between the two statements
                    events, triggers = self._fold(conn, int(row.id), str(row.patient_ref),
                                                  int(row.events), list(row.triggers or []))
            except IntegrityError:
                if row is None:
                    raise
                skip.append(row.id)  # its patient is being checked by another worker
                continue
            return Entry(int(row.id), str(row.patient_ref), int(row.attempts) + 1,
                         events, row.created, triggers)
        return None

    @staticmethod
    def _fold(conn: Connection, entry_id: int, patient_ref: str, events: int,
              triggers: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
        """A re-check that starts takes every other waiting entry of its patient (those
        that stopped absorbing after WATCH_COALESCE_S, or wait out a retry): it reads the
        record as it is now, after their events, so they would only check it again."""
        q = watch_queue.c
        rows = conn.execute(select(q.id, q.events, q.triggers).where(
            q.patient_ref == patient_ref, q.state == "pending", q.id != entry_id)
            .order_by(q.id).with_for_update(skip_locked=True)).all()
        if not rows:
            return events, triggers
        for r in rows:
            events += int(r.events)
            triggers += list(r.triggers or [])[:max(0, MAX_TRIGGERS - len(triggers))]
        conn.execute(delete(watch_queue).where(q.id.in_([r.id for r in rows])))
        conn.execute(update(watch_queue).where(q.id == entry_id).values(
            events=events, triggers=triggers))
        return events, triggers

    def renew(self, entry: Entry, owner: str, now: datetime) -> bool:
        """Extend the lease of a running entry; False when it is no longer ours (its lease
        ran out and another worker took it)."""
        q = watch_queue.c
        with self.store._writer(), self.engine.begin() as conn:
            done = conn.execute(update(watch_queue).where(
                q.id == entry.id, q.lease_owner == owner, q.state == "running")
                .values(lease_until=now + timedelta(seconds=LEASE_S)))
        return bool(done.rowcount == 1)

    def complete(self, conn: Connection, entry: Entry, owner: str) -> None:
        """Within the caller's transaction: the entry leaves the queue."""
        q = watch_queue.c
        conn.execute(delete(watch_queue).where(q.id == entry.id, q.lease_owner == owner))

    def fail(self, entry: Entry, owner: str, error: str, now: datetime) -> str:
        """Back to waiting after a backoff, or ``failed`` after MAX_ATTEMPTS; returns the
        state."""
        q = watch_queue.c
        state = "failed" if entry.attempts >= MAX_ATTEMPTS else "pending"
        with self.store._writer(), self.engine.begin() as conn:
            conn.execute(update(watch_queue).where(q.id == entry.id, q.lease_owner == owner)
                         .values(state=state, lease_owner=None, lease_until=None,
                                 not_before=now + timedelta(seconds=backoff_s(entry.attempts)),
                                 last_error=error[:500]))
        return state

    def depth(self) -> dict[str, int]:
        q = watch_queue.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(q.state, func.count()).group_by(q.state)).all()
        out = {"pending": 0, "running": 0, "failed": 0}
        out.update({str(state): int(n) for state, n in rows})
        return out

    def entries(self) -> list[dict[str, Any]]:
        """Every entry (for tests and operators)."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(watch_queue).order_by(watch_queue.c.id)).all()]

    # --- what notifications brought -----------------------------------------------------------

    @staticmethod
    def _remember(conn: Connection, seen: Iterable[tuple[str, str]], now: datetime) -> None:
        s = watch_seen.c
        for resource, version in seen:
            exists = conn.execute(select(s.resource).where(
                s.resource == resource, s.version == version)).first()
            if exists is None:
                conn.execute(insert(watch_seen).values(resource=resource, version=version,
                                                       seen=now))

    def unseen(self, versions: Sequence[tuple[str, str]], now: datetime) -> set[tuple[str, str]]:
        """Which (resource, version) pairs no notification or catch-up brought; remembers them
        all."""
        s = watch_seen.c
        if not versions:
            return set()
        with self.store._writer(), self.engine.begin() as conn:
            known: set[tuple[str, str]] = set()
            wanted = sorted(set(versions))
            for start in range(0, len(wanted), 200):
                chunk = wanted[start:start + 200]
                rows = conn.execute(select(s.resource, s.version).where(
                    s.resource.in_({r for r, _ in chunk}))).all()
                known |= {(str(r), str(v)) for r, v in rows}
            new = set(wanted) - known
            self._remember(conn, new, now)
            conn.execute(delete(watch_seen).where(s.seen < now - SEEN_KEEP))
        return new

    # --- named values ---------------------------------------------------------------------------

    def get(self, key: str) -> tuple[str | None, datetime | None]:
        s = watch_state.c
        with self.engine.connect() as conn:
            row = conn.execute(select(s.value, s.updated).where(s.key == key)).first()
        return (None, None) if row is None else (row.value, row.updated)

    def put(self, key: str, value: str | None, now: datetime) -> None:
        s = watch_state.c
        with self.store._writer(), self.engine.begin() as conn:
            done = conn.execute(update(watch_state).where(s.key == key)
                                .values(value=value, updated=now))
            if done.rowcount == 0:
                conn.execute(insert(watch_state).values(key=key, value=value, updated=now))

    def take_turn(self, key: str, every_s: float, now: datetime) -> bool:
        """True for the one caller (of every worker sharing the database) whose turn it is to
        do what ``key`` names, at most once per ``every_s``."""
        s = watch_state.c
        try:
            with self.store._writer(), self.engine.begin() as conn:
                done = conn.execute(update(watch_state).where(
                    s.key == key, s.updated <= now - timedelta(seconds=every_s))
                    .values(updated=now))
                if done.rowcount == 1:
                    return True
                if conn.execute(select(s.key).where(s.key == key)).first() is not None:
                    return False
                conn.execute(insert(watch_state).values(key=key, value=None, updated=now))
                return True
        except IntegrityError:
            return False

    def beat(self, owner: str, now: datetime) -> None:
        """This worker ran now; heartbeats of workers gone for a day are removed."""
        s = watch_state.c
        self.put("worker:" + owner, None, now)
        with self.store._writer(), self.engine.begin() as conn:
            conn.execute(delete(watch_state).where(
                s.key.like("worker:%"), s.updated < now - HEARTBEAT_KEEP))

    def heartbeats(self) -> list[tuple[str, datetime]]:
        s = watch_state.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(s.key, s.updated).where(s.key.like("worker:%"))).all()
        return [(str(k)[len("worker:"):], v) for k, v in rows]

    # --- results ------------------------------------------------------------------------------

    def record_result(self, entry: Entry, owner: str, now: datetime, order_refs: Sequence[str],
                      changes: Sequence[FindingChange], outcome: str = "done",
                      error: str | None = None) -> str:
        """The re-check's result and the entry's removal, in ONE transaction; returns the
        re-check id."""
        recheck_id = str(uuid.uuid4())
        with self.store._writer(), self.engine.begin() as conn:
            conn.execute(insert(watch_rechecks).values(
                id=recheck_id, time=now, patient_ref=entry.patient_ref,
                order_refs=list(order_refs), triggers=entry.triggers, events=entry.events,
                first_event=entry.created, outcome=outcome, error=error))
            if changes:
                conn.execute(insert(watch_findings), [{
                    "recheck_id": recheck_id, "time": now, "patient_ref": entry.patient_ref,
                    "order_ref": c.order_ref, "finding_id": c.finding_id, "rule_id": c.rule_id,
                    "severity": c.severity, "change": c.change, "server_id": c.server_id,
                    "detected_issue": c.detected_issue} for c in changes])
            self.complete(conn, entry, owner)
        return recheck_id

    def rechecks(self, patient_ref: str | None = None) -> list[dict[str, Any]]:
        r = watch_rechecks.c
        query = select(watch_rechecks).order_by(r.time, r.id)
        if patient_ref is not None:
            query = query.where(r.patient_ref == patient_ref)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query).all()]

    def findings(self, patient_ref: str | None = None) -> list[dict[str, Any]]:
        f = watch_findings.c
        query = select(watch_findings).order_by(f.id)
        if patient_ref is not None:
            query = query.where(f.patient_ref == patient_ref)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query).all()]
