"""Audit and feedback store (interfaces.md section 5): SQLAlchemy over SQLite or PostgreSQL.

- SQLite (the default, a file under ``var/``) runs in WAL mode with a busy timeout, and every
  transaction starts with ``BEGIN IMMEDIATE`` so that writers queue instead of failing. It is
  for one host. Several hosts share PostgreSQL (``DATABASE_URL=postgresql://...``, driver
  psycopg 3).
- The schema is created or migrated at start under a lock (a PostgreSQL advisory lock; for
  SQLite the ``BEGIN IMMEDIATE`` transaction itself), so replicas starting together do not race.
- A check is recorded in ONE transaction: the check row and its findings are complete or
  absent.
- ``use_jti`` relies on a unique constraint, so two replicas sharing one database cannot both
  accept the same JWT ``jti``.

Every front door records an answered check with ``record()`` (one latency start, the findings
as the Finding says them); below it ``record_check``. The API used by the web layer and the
CDS Hooks endpoints: ``record_feedback``, ``use_jti``, ``ping``, ``report``; write-back bookkeeping:
``persisted_for_order`` and ``record_persisted``; ``purge`` for retention.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import math
import os
import queue
import statistics
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter as _perf_counter
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from . import metrics
from .findings import Finding

if TYPE_CHECKING:
    from .spool import Spool  # typing only: the spool imports the store

SCHEMA_VERSION = 2
# version -> the step that brings a database from version - 1 to it (run in order, inside the
# locked start-up transaction). create_all makes new tables; steps change existing ones.
USER_COMMENT_MAX = 2000


def _add_user_comment(conn: Connection) -> None:
    """2: the clinician's free-text comment with CDS feedback (overrideReason.userComment)."""
    conn.execute(text(f"ALTER TABLE feedback ADD COLUMN user_comment "
                      f"VARCHAR({USER_COMMENT_MAX})"))


MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _add_user_comment}
REPORT_COMMENTS = 5   # the newest comments per rule shown in the alert report
_LOCK_KEY = 0x62636C6F  # PostgreSQL advisory lock key for schema changes ("bclo")
# Bounded waits (DB_CONNECT_TIMEOUT_S, DB_STATEMENT_TIMEOUT_S): every store call made while
# answering runs on a thread of the store's own and its caller waits at most the statement
# timeout (a frozen PostgreSQL server enforces no timeout of its own); /readyz waits less.
STORE_THREADS = 8
PROBE_TIMEOUT_S = 0.8
# after a failure, calls fail at once except one trial a second until one succeeds
RETRY_AFTER_FAILURE_S = 1.0
# /readyz says 503 for this long after a failed store call, unless a check was recorded since
RECENT_FAILURE_S = 10.0


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes in, UTC-aware datetimes out; stored as naive UTC everywhere."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the store only takes timezone-aware datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

schema_version = Table(
    "schema_version", metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

checks = Table(
    "checks", metadata,
    Column("id", _ID, primary_key=True,
           autoincrement=True),
    Column("time", UTCDateTime, nullable=False, index=True),
    Column("caller", String(200), nullable=False),
    Column("endpoint", String(200), nullable=False),
    Column("hook", String(100)),
    Column("hook_instance", String(200)),
    Column("patient_ref", String(500)),
    Column("order_refs", JSON, nullable=False),
    Column("knowledge_version", String(50), nullable=False),
    Column("latency_ms", Float, nullable=False),
)

findings = Table(
    "findings", metadata,
    Column("id", _ID, primary_key=True,
           autoincrement=True),
    Column("check_id", ForeignKey("checks.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("rule_id", String(100), nullable=False, index=True),
    Column("severity", String(20), nullable=False),
    Column("finding_id", String(100), nullable=False),
    Column("card_uuid", String(100), index=True),
    Column("detected_issue", JSON, nullable=False),
)

feedback = Table(
    "feedback", metadata,
    Column("id", _ID, primary_key=True,
           autoincrement=True),
    Column("service_id", String(200), nullable=False),
    Column("card_uuid", String(100), nullable=False, index=True),
    Column("outcome", String(50), nullable=False),
    Column("accepted_suggestions", JSON, nullable=False),
    Column("override_reason", String(200)),
    Column("user_comment", String(USER_COMMENT_MAX)),
    Column("outcome_time", UTCDateTime, nullable=False),
    Column("received", UTCDateTime, nullable=False, index=True),
    Column("check_id", _ID),
    Column("finding_row_id", _ID),
)

jtis = Table(
    "jti", metadata,
    Column("id", _ID, primary_key=True,
           autoincrement=True),
    Column("issuer", String(500), nullable=False),
    Column("jti", String(500), nullable=False),
    Column("expires", UTCDateTime, nullable=False, index=True),
    UniqueConstraint("issuer", "jti", name="uq_jti_issuer_jti"),
)

persisted = Table(
    "persisted", metadata,
    Column("id", _ID, primary_key=True,
           autoincrement=True),
    Column("order_ref", String(500), nullable=False),
    Column("finding_id", String(100), nullable=False),
    Column("server_id", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    UniqueConstraint("order_ref", "finding_id", name="uq_persisted_order_finding"),
)
# The record id of each recorded check (CheckRecord.record_id): a retried call and a record
# replayed from the spool (service/spool.py) are recorded once. A table of its own rather than
# a column of checks, so that an existing database gains it without a migration step.
record_ids = Table(
    "record_ids", metadata,
    Column("record_id", String(64), primary_key=True),
    Column("check_id", ForeignKey("checks.id", ondelete="CASCADE"), nullable=False, index=True),
)
# The one row /readyz writes: proof that the store takes writes, not only reads.
ready_probe = Table(
    "ready_probe", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("time", UTCDateTime, nullable=False),
)
Index("ix_findings_rule_card", findings.c.rule_id, findings.c.card_uuid)
# built once: a statement made per call costs more than the insert (bench/step_profile.py)
_INSERT_CHECK = insert(checks)
_INSERT_FINDING = insert(findings)
_INSERT_RECORD_ID = insert(record_ids)
_SELECT_RECORDED = select(record_ids.c.check_id).where(
    record_ids.c.record_id == bindparam("record_id"))
# record ids this process recorded or found recorded lately: a hint only (the database
# decides), so that a retried call reads its check id instead of writing the whole check again
# and rolling it back (a retry: 2.1 ms CPU that way, 0.8 this way; bench/cpu_sign.py)
RECENT_RECORD_IDS = 4096


# --- records --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FindingRecord:
    """One finding of a recorded check. ``card_uuid`` is the CDS card that carried it (None for
    the FHIR endpoints); ``detected_issue`` is the DetectedIssue JSON as sent."""

    rule_id: str
    severity: str
    finding_id: str
    card_uuid: str | None
    detected_issue: dict[str, Any]


@dataclass(frozen=True)
class CheckRecord:
    """One check as the audit trail keeps it.

    ``time``: when the check ran (timezone-aware); ``caller``: the identity from
    authentication (e.g. ``token:<fingerprint>``, a JWT issuer, ``anonymous``);
    ``endpoint``: the path or service (``MedicationRequest/$check``, ``cds-services/<id>``,
    ``cli``); ``hook``/``hook_instance``: CDS Hooks values or None; ``patient_ref`` and
    ``order_refs``: references only; ``latency_ms``: time spent answering.
    """

    time: datetime
    caller: str
    endpoint: str
    hook: str | None
    hook_instance: str | None
    patient_ref: str | None
    order_refs: Sequence[str]
    knowledge_version: str
    latency_ms: float
    findings: list[FindingRecord] = field(default_factory=list)
    # the same id is recorded once (record_key: from the call, so that a retry has it too)
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def record_key(*parts: str) -> str:
    """A record id made from what identifies a call (its path, request id or hookInstance,
    and body digest): the same call sent again gets the same id."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


@dataclass(frozen=True)
class RuleReport:
    """Per rule: ``fired`` (findings recorded from every path; for CDS calls distinct cards),
    ``accepted`` and ``overridden`` (distinct cards with that feedback), the most frequent
    override reasons with their counts, and the median latency (ms) of the checks where the
    rule fired (None when it never fired)."""

    rule_id: str
    fired: int
    accepted: int
    overridden: int
    top_override_reasons: list[tuple[str, int]]
    median_latency_ms: float | None
    # the newest override comments (reason code or None, the clinician's text), newest first
    comments: list[tuple[str | None, str]] = field(default_factory=list)


@dataclass(frozen=True)
class PersistedIssue:
    order_ref: str
    finding_id: str
    server_id: str
    status: str


class StoreError(RuntimeError):
    """The store cannot be opened or used."""


class StoreUnavailable(SQLAlchemyError):
    """The store did not answer within its timeout, or failed a moment ago and is not tried
    again yet (a SQLAlchemyError, so that every caller's store error handling applies)."""


# --- engine ---------------------------------------------------------------------------------

def _engine(url_text: str, connect_timeout_s: float = 3.0,
            statement_timeout_s: float | None = 5.0) -> Engine:
    """``statement_timeout_s`` bounds each statement, lock waits included (None: no bound,
    for the command line's report)."""
    url = make_url(url_text)
    backend = url.get_backend_name()
    if backend == "postgresql":
        if url.drivername in {"postgresql", "postgres"}:
            url = url.set(drivername="postgresql+psycopg")
        # libpq takes whole seconds, at least 2
        args: dict[str, Any] = {"connect_timeout": max(2, math.ceil(connect_timeout_s))}
        if statement_timeout_s is not None:
            ms = int(statement_timeout_s * 1000)
            args["options"] = f"-c statement_timeout={ms} -c lock_timeout={ms}"
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                             pool_timeout=statement_timeout_s or 30, connect_args=args)
    if backend != "sqlite":
        raise StoreError(f"DATABASE_URL must be a sqlite or postgresql URL, not {backend}")
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        _private_file(Path(database).expanduser())
    busy_ms = int((statement_timeout_s or 30) * 1000)
    engine = create_engine(url, connect_args={"timeout": busy_ms / 1000,
                                              "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below starts them
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        if database and database != ":memory:":
            cur.execute("PRAGMA journal_mode=WAL")
            # a write-ahead log that grew while the disk was full shrinks back at the next
            # checkpoint instead of keeping the space (and filling what was freed)
            cur.execute("PRAGMA journal_size_limit=4194304")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get("read_only") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (its write-ahead log and shared
    memory files take the same mode from it); an existing file is made so too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077 and os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


P = ParamSpec("P")
R = TypeVar("R")


class _Guard:
    """Store calls on a few daemon threads of the store's own, so that the caller waits at
    most ``timeout_s`` whatever the database does (a thread still waiting then goes on; its
    result, if it ever comes, is discarded), and a breaker: after a failure the calls fail at
    once, except one trial a second, until one succeeds."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.failed_at: float | None = None       # set while failing (monotonic)
        self.last_failure: float | None = None    # the last failure, even if recovered since
        self.last_error = ""
        self._trial = False
        self._lock = threading.Lock()
        self._pid = 0
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = \
            queue.SimpleQueue()
        self._idle = 0
        self._threads = 0

    def call(self, fn: Callable[..., R], *args: Any, probe: bool = False,
             timeout: float | None = None) -> R:
        """``fn(*args)`` within the timeout; ``probe`` calls are made even while failing."""
        trial = self._admit(probe)
        try:
            if self.timeout_s is None:
                result = fn(*args)
            else:
                result = self._bounded(functools.partial(fn, *args),
                                       timeout or self.timeout_s)
        except IntegrityError:
            raise  # the database answered: a constraint said no
        except SQLAlchemyError as exc:
            self._failed(exc)
            raise
        finally:
            if trial:
                self._trial = False
        if self.failed_at is not None:
            self.failed_at = None
            logging.getLogger("baclofen_check.store").warning(
                "the store takes calls again", extra={"event": "store-recovered"})
        return result

    def problem(self) -> str | None:
        """Why the store is not to be relied on now (None: it is)."""
        if self.failed_at is not None:
            return f"store calls failing ({self.last_error})"
        if self.last_failure is not None and \
                time.monotonic() - self.last_failure < RECENT_FAILURE_S:
            return f"a store call failed in the last {RECENT_FAILURE_S:g} s ({self.last_error})"
        return None

    def _admit(self, probe: bool) -> bool:
        failed = self.failed_at
        if failed is None or probe:
            return False
        with self._lock:
            if not self._trial and time.monotonic() - failed >= RETRY_AFTER_FAILURE_S:
                self._trial = True
                return True
        raise StoreUnavailable(f"the store failed {time.monotonic() - failed:.1f} s ago "
                               f"({self.last_error}); not tried again yet")

    def _failed(self, exc: BaseException) -> None:
        first = self.failed_at is None
        self.failed_at = self.last_failure = time.monotonic()
        self.last_error = type(exc).__name__
        if first:
            logging.getLogger("baclofen_check.store").error(
                "store call failed", extra={"event": "store-failed",
                                            "error_type": self.last_error})

    def _bounded(self, job: Callable[[], R], timeout: float) -> R:
        future: Future[R] = Future()
        with self._lock:
            if self._pid != os.getpid():  # a forked process starts its own threads
                self._pid, self._jobs, self._idle, self._threads = \
                    os.getpid(), queue.SimpleQueue(), 0, 0
            if self._idle == 0:
                if self._threads >= STORE_THREADS:
                    raise StoreUnavailable("every store thread is still waiting on the store")
                self._threads += 1
                threading.Thread(target=self._work, name="store", daemon=True).start()
            else:
                self._idle -= 1
            self._jobs.put((future, job))
        try:
            return future.result(timeout)
        except FutureTimeout as exc:
            raise StoreUnavailable(f"the store did not answer within {timeout:g} s") from exc

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            future, job = jobs.get()
            try:
                future.set_result(job())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)
            with self._lock:
                if jobs is not self._jobs:
                    return
                self._idle += 1


def _bounded(fn: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """A Store method whose caller waits at most the statement timeout (see _Guard)."""

    @functools.wraps(fn)
    def run(self: Store, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.guard.call(functools.partial(fn, self, *args, **kwargs))

    return run


class _SqliteWriter:
    """One audit writer at a time on a SQLite file, across threads and worker processes.

    SQLite makes a writer that finds the database locked poll with sleeps growing to 100 ms,
    so with several workers and threads recording checks at once a write could wait far longer
    than the write it waited for (p99 near a second at 4 concurrent calls, bench/run.py).
    Waiting on a lock file instead wakes the next writer as soon as the last one committed.
    The transaction itself, and so what is written and when it is durable, is unchanged."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._threads:
            if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


def _sqlite_writer(url_text: str) -> _SqliteWriter | None:
    url = make_url(url_text)
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    return _SqliteWriter(str(Path(database).expanduser()) + ".writer-lock")


class Store:
    """The audit trail, CDS feedback, JWT replay protection and write-back bookkeeping."""

    def __init__(self, database_url: str, retention_days: int = 365,
                 connect_timeout_s: float = 3.0, statement_timeout_s: float | None = 5.0
                 ) -> None:
        self.url = database_url
        self.retention_days = retention_days
        self.engine = _engine(database_url, connect_timeout_s, statement_timeout_s)
        self.backend = self.engine.dialect.name
        self._sqlite_writer = _sqlite_writer(database_url)
        self.guard = _Guard(statement_timeout_s)
        # where records wait while the store cannot take them (create_app sets it)
        self.spool: Spool | None = None
        self._recent_ids: dict[str, None] = {}  # see RECENT_RECORD_IDS

    # --- start-up ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or migrate the schema under a lock shared by every replica (on SQLite the
        writer lock file also serialises the first switch to WAL, which SQLite may refuse
        with "database is locked" when several processes open a new file at once)."""
        with self._writer(), self.engine.begin() as conn:
            if self.backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            metadata.create_all(conn, checkfirst=True)
            current = conn.execute(select(schema_version.c.version)
                                   .where(schema_version.c.id == 1)).scalar()
            if current is None:
                conn.execute(insert(schema_version).values(id=1, version=SCHEMA_VERSION))
            elif current > SCHEMA_VERSION:
                raise StoreError(f"the database schema is version {current}, newer than this "
                                 f"service ({SCHEMA_VERSION}): upgrade the service")
            elif current < SCHEMA_VERSION:
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[version](conn)
                conn.execute(update(schema_version).where(schema_version.c.id == 1)
                             .values(version=SCHEMA_VERSION))

    def start(self, now: datetime | None = None) -> Store:
        """Migrate, then purge what is past retention. Returns self."""
        self.migrate()
        self.purge(now)
        return self

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(read_only=True)
            yield conn

    def _writer(self) -> AbstractContextManager[None]:
        return self._sqlite_writer.hold() if self._sqlite_writer else nullcontext()

    # --- API ----------------------------------------------------------------------------------

    def record_check(self, record: CheckRecord) -> int:
        """Record one check and its findings in ONE transaction; returns the check id (that
        of the check recorded before when this record id was: a retried call is recorded
        once).

        Either everything is written or nothing is (an error or a killed process inside the
        transaction leaves no row). The findings are also counted in the Prometheus metrics
        (per rule and severity), so every path that records a check is counted."""
        metrics.count_findings([(f.rule_id, f.severity) for f in record.findings])
        return self.guard.call(self._record_check, record)[0]

    def _record_check(self, record: CheckRecord) -> tuple[int, bool]:
        if record.record_id in self._recent_ids:  # most likely a retry: read first
            found = self._recorded_check(record.record_id)
            if found is not None:
                return found, False
        try:
            check_id = self._insert_check(record)
            self.guard.last_failure = None  # a check recorded: the store takes them again
        except IntegrityError:
            found = self._recorded_check(record.record_id)
            if found is None:
                raise
            self._seen(record.record_id)  # recorded by another process (worker) first
            return found, False
        self._seen(record.record_id)
        return check_id, True

    def _seen(self, record_id: str) -> None:
        if len(self._recent_ids) >= RECENT_RECORD_IDS:
            self._recent_ids.clear()
        self._recent_ids[record_id] = None

    def _recorded_check(self, record_id: str) -> int | None:
        """The check id recorded with this record id, if any."""
        with self._read() as conn:
            found = conn.execute(_SELECT_RECORDED, {"record_id": record_id}).scalar()
        return None if found is None else int(found)

    def replay_checks(self, records: Sequence[CheckRecord]) -> tuple[int, int]:
        """Record checks from the spool in one transaction (not counted again), tried even
        while the store is failing: (recorded now, recorded before by their record id)."""
        return self.guard.call(self._replay_batch, list(records), probe=True)

    def _replay_batch(self, records: list[CheckRecord]) -> tuple[int, int]:
        with self._read() as conn:
            known = set(conn.execute(select(record_ids.c.record_id).where(
                record_ids.c.record_id.in_([r.record_id for r in records]))).scalars())
        fresh = [r for r in records if r.record_id not in known]
        try:
            with self._writer(), self.engine.begin() as conn:
                for record in fresh:
                    self._insert_into(conn, record)
        except IntegrityError:  # one recorded meanwhile (or twice in the batch): one by one
            done = sum(self._record_check(r)[1] for r in fresh)
            return done, len(records) - done
        self.guard.last_failure = None
        return len(fresh), len(known)

    def _insert_check(self, record: CheckRecord) -> int:
        with self._writer(), self.engine.begin() as conn:
            return self._insert_into(conn, record)

    def _insert_into(self, conn: Connection, record: CheckRecord) -> int:
        inserted = conn.execute(_INSERT_CHECK, {
            "time": record.time,
            "caller": record.caller[:200],
            "endpoint": record.endpoint[:200],
            "hook": record.hook,
            "hook_instance": record.hook_instance,
            "patient_ref": record.patient_ref,
            "order_refs": list(record.order_refs),
            "knowledge_version": record.knowledge_version,
            "latency_ms": float(record.latency_ms),
        }).inserted_primary_key
        assert inserted is not None
        check_id = inserted[0]
        if record.findings:
            conn.execute(_INSERT_FINDING, [{
                "check_id": check_id,
                "rule_id": f.rule_id,
                "severity": f.severity,
                "finding_id": f.finding_id,
                "card_uuid": f.card_uuid,
                "detected_issue": f.detected_issue,
            } for f in record.findings])
        # last: a record id recorded before fails here and undoes the whole transaction
        conn.execute(_INSERT_RECORD_ID, {"record_id": record.record_id,
                                         "check_id": check_id})
        return int(check_id)

    @_bounded
    def record_feedback(
        self,
        service_id: str,
        card_uuid: str,
        outcome: str,
        accepted_suggestions: list[str],
        override_reason: str | None,
        outcome_time: datetime,
        user_comment: str | None = None,
    ) -> bool:
        """Record CDS Hooks feedback for one card. Returns True when the card was recorded by
        a check (the feedback is joined to that check and finding), False otherwise (the
        feedback is still kept, unjoined). ``override_reason`` is the reason code (or its
        display when there is no code). Counted in the metrics per rule of the card (rule
        ``unknown`` when the card was not recorded)."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(findings.c.id, findings.c.check_id)
                .where(findings.c.card_uuid == card_uuid)
                .order_by(findings.c.id).limit(1)
            ).first()
            conn.execute(insert(feedback).values(
                service_id=service_id[:200],
                card_uuid=card_uuid[:100],
                outcome=outcome[:50],
                accepted_suggestions=list(accepted_suggestions),
                override_reason=override_reason[:200] if override_reason else None,
                user_comment=user_comment[:USER_COMMENT_MAX] if user_comment else None,
                outcome_time=outcome_time,
                received=datetime.now(UTC),
                check_id=row.check_id if row else None,
                finding_row_id=row.id if row else None,
            ))
            rules = conn.execute(select(findings.c.rule_id).distinct()
                                 .where(findings.c.card_uuid == card_uuid)).scalars().all()
        for rule_id in rules or ["unknown"]:
            metrics.FEEDBACK.labels(rule_id, outcome[:50]).inc()
        return row is not None

    @_bounded
    def returned_findings(self, endpoint: str, patient_ref: str, finding_ids: Sequence[str],
                          since: datetime, hook_instance: str | None = None) -> set[str]:
        """Which of these finding ids a check at ``endpoint`` for this patient returned on a
        card at or after ``since`` (baclofen-patient-view shows a card once per period). The
        checks of ``hook_instance`` do not count: a client retrying the same call (its first
        answer lost) gets the same cards again."""
        if not finding_ids:
            return set()
        where = [checks.c.endpoint == endpoint[:200], checks.c.patient_ref == patient_ref,
                 checks.c.time >= since, findings.c.card_uuid.is_not(None),
                 findings.c.finding_id.in_(list(finding_ids))]
        if hook_instance is not None:
            where.append(or_(checks.c.hook_instance.is_(None),
                             checks.c.hook_instance != hook_instance))
        with self._read() as conn:
            rows = conn.execute(select(findings.c.finding_id).distinct()
                                .join(checks, checks.c.id == findings.c.check_id)
                                .where(*where))
            return {str(r[0]) for r in rows}

    @_bounded
    def use_jti(self, issuer: str, jti: str, expires: datetime) -> bool:
        """Mark a JWT id as used. False when this (issuer, jti) was used before, by this or
        any other replica sharing the database (a unique constraint decides)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(jtis).values(issuer=issuer, jti=jti, expires=expires))
        except IntegrityError:
            return False
        return True

    def probe(self) -> None:
        """Write the probe row within PROBE_TIMEOUT_S, made even while failing (a success
        ends the failing state); raises SQLAlchemyError when the store cannot."""
        self.guard.call(self._write_probe, probe=True, timeout=PROBE_TIMEOUT_S)

    def _write_probe(self) -> None:
        now = datetime.now(UTC)
        try:
            with self._writer(), self.engine.begin() as conn:
                done = conn.execute(update(ready_probe).where(ready_probe.c.id == 1)
                                    .values(time=now))
                if done.rowcount == 0:
                    conn.execute(insert(ready_probe).values(id=1, time=now))
        except IntegrityError:
            pass  # another replica made the row first: the store took a write all the same

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self._read() as conn:
                conn.execute(select(1)).scalar()
        except SQLAlchemyError:
            return False
        return True

    def report(self) -> list[RuleReport]:
        """Per rule: fired, accepted, overridden, top override reasons, median latency."""
        fired: Counter[str] = Counter()
        latencies: dict[str, list[float]] = defaultdict(list)
        with self._read() as conn:
            plain = conn.execute(
                select(findings.c.rule_id, func.count())
                .where(findings.c.card_uuid.is_(None)).group_by(findings.c.rule_id))
            for rule_id, n in plain:
                fired[rule_id] += int(n)
            carded = conn.execute(
                select(findings.c.rule_id, func.count(findings.c.card_uuid.distinct()))
                .where(findings.c.card_uuid.is_not(None)).group_by(findings.c.rule_id))
            for rule_id, n in carded:
                fired[rule_id] += int(n)
            per_check = (select(findings.c.rule_id, findings.c.check_id)
                         .distinct().subquery())
            for rule_id, latency in conn.execute(
                select(per_check.c.rule_id, checks.c.latency_ms)
                .join(checks, checks.c.id == per_check.c.check_id)
            ):
                latencies[rule_id].append(float(latency))
            card_rules = (select(findings.c.rule_id, findings.c.card_uuid)
                          .where(findings.c.card_uuid.is_not(None)).distinct().subquery())
            outcomes: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
            reasons: dict[str, Counter[str]] = defaultdict(Counter)
            reason_cards: set[tuple[str, str, str]] = set()
            comments: dict[str, list[tuple[str | None, str]]] = defaultdict(list)
            for rule_id, card, outcome, reason, comment in conn.execute(
                select(card_rules.c.rule_id, feedback.c.card_uuid, feedback.c.outcome,
                       feedback.c.override_reason, feedback.c.user_comment)
                .join(card_rules, card_rules.c.card_uuid == feedback.c.card_uuid)
                .order_by(feedback.c.id)
            ):
                outcomes[rule_id][outcome].add(card)
                if comment:
                    comments[rule_id].insert(0, (reason, comment))
                if outcome == "overridden" and reason and (rule_id, card, reason) not in \
                        reason_cards:
                    reason_cards.add((rule_id, card, reason))
                    reasons[rule_id][reason] += 1
        result = []
        for rule_id in sorted(set(fired) | set(outcomes)):
            lat = latencies.get(rule_id)
            result.append(RuleReport(
                rule_id=rule_id,
                fired=fired.get(rule_id, 0),
                accepted=len(outcomes[rule_id]["accepted"]) if rule_id in outcomes else 0,
                overridden=len(outcomes[rule_id]["overridden"]) if rule_id in outcomes else 0,
                top_override_reasons=reasons[rule_id].most_common(3) if rule_id in reasons
                else [],
                median_latency_ms=statistics.median(lat) if lat else None,
                comments=comments[rule_id][:REPORT_COMMENTS] if rule_id in comments else [],
            ))
        return result

    # --- write-back bookkeeping ---------------------------------------------------------------

    @_bounded
    def persisted_for_order(self, order_ref: str) -> list[PersistedIssue]:
        """The DetectedIssues this service wrote to the FHIR server for one order."""
        with self._read() as conn:
            rows = conn.execute(select(persisted).where(persisted.c.order_ref == order_ref)
                                .order_by(persisted.c.id)).all()
        return [PersistedIssue(r.order_ref, r.finding_id, r.server_id, r.status) for r in rows]

    @_bounded
    def record_persisted(self, issues: Sequence[PersistedIssue], now: datetime) -> None:
        """Remember what was written back (insert or update by order and finding id)."""
        with self.engine.begin() as conn:
            for issue in issues:
                done = conn.execute(
                    update(persisted)
                    .where(persisted.c.order_ref == issue.order_ref,
                           persisted.c.finding_id == issue.finding_id)
                    .values(server_id=issue.server_id, status=issue.status, updated=now))
                if done.rowcount == 0:
                    conn.execute(insert(persisted).values(
                        order_ref=issue.order_ref, finding_id=issue.finding_id,
                        server_id=issue.server_id, status=issue.status, updated=now))

    # --- retention ----------------------------------------------------------------------------

    def purge(self, now: datetime | None = None) -> int:
        """Delete audit rows (checks with their findings, feedback) older than the retention
        period and expired JWT ids. Returns the number of checks deleted.

        choice: the write-back record (``persisted``) is not audit data and is kept: it is what
        lets a later check cancel the DetectedIssues written earlier."""
        moment = now or datetime.now(UTC)
        cutoff = moment - timedelta(days=self.retention_days)
        with self._writer(), self.engine.begin() as conn:
            old = select(checks.c.id).where(checks.c.time < cutoff)
            conn.execute(delete(findings).where(findings.c.check_id.in_(old)))
            conn.execute(delete(record_ids).where(record_ids.c.check_id.in_(old)))
            n = conn.execute(delete(checks).where(checks.c.time < cutoff)).rowcount
            conn.execute(delete(feedback).where(feedback.c.outcome_time < cutoff))
            conn.execute(delete(jtis).where(jtis.c.expires < moment))
        return int(n or 0)

    def counts(self) -> dict[str, int]:
        """Row counts per table (for tests and operators)."""
        with self._read() as conn:
            return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
                    for t in (checks, findings, feedback, jtis, persisted)}


def record_answered(store: Store | None, record: CheckRecord) -> bool:
    """Record a check that has been answered: in the store, or when it cannot take it in the
    spool, durably before the answer is sent (service/spool.py). False when neither could.

    choice: when neither can, the check is still answered (a clinical answer matters more
    than its audit row); the record is counted and logged as lost with the references that
    reconcile it, and /readyz reports the store so that a load balancer takes the replica out.
    """
    if store is None:
        return False
    from .spool import record_durably  # cycle: the spool sits on the store (reads its records)

    return record_durably(store, record)


def open_store(database_url: str, retention_days: int = 365, connect_timeout_s: float = 3.0,
               statement_timeout_s: float | None = 5.0) -> Store:
    """Open, migrate and purge: what create_app does at start."""
    return Store(database_url, retention_days, connect_timeout_s, statement_timeout_s).start()


class _App(Protocol):
    extensions: dict[str, Any]


def get_store(app: _App) -> Store:
    """The application's store (created by create_app)."""
    store: Store = app.extensions["store"]
    return store


def record(
    store: Store | None,
    *,
    started: float,
    time: datetime,
    caller: str,
    endpoint: str,
    patient_ref: str | None,
    order_refs: Sequence[str],
    knowledge_version: str,
    issues: Iterable[tuple[Finding, dict[str, Any], str | None]],
    record_id: str,
    hook: str | None = None,
    hook_instance: str | None = None,
) -> bool:
    """Record one answered check, for every front door (native $check, by-id, CDS Hooks,
    batch lines, watch re-checks): ``started`` is the ``time.perf_counter()`` the front door
    took once when the request arrived (the latency counts from it); ``issues`` are the
    findings with the DetectedIssue sent for each and the card that carried it (None off
    CDS Hooks). Rule, severity and finding id come from the Finding, never from the JSON.
    Nothing answered is lost: see ``record_answered``."""
    return record_answered(store, CheckRecord(
        time=time, caller=caller, endpoint=endpoint, hook=hook, hook_instance=hook_instance,
        patient_ref=patient_ref, order_refs=list(order_refs),
        knowledge_version=knowledge_version,
        latency_ms=round((_perf_counter() - started) * 1000, 3),
        findings=[FindingRecord(f.rule_id, f.severity, f.id, card, issue)
                  for f, issue, card in issues],
        record_id=record_id))
