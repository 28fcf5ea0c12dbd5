"""The worker: takes queued patients, re-checks their active baclofen therapy, and every
WATCH_CHECK_S looks after the Subscriptions and catches up.

A re-check of one patient: search its active MedicationRequests on FHIR_SERVER_URL (with their
Medications) and keep the baclofen ones; for each, the by-id review check with write-back
(service/assemble/byid.py, service/writeback.py: ``PUT DetectedIssue/bc-<finding>``,
stale findings cancelled, nothing rewritten on a repeat), recorded in the audit store with
endpoint ``watch``, the trigger's kind as ``hook`` and the triggering resource as
``hookInstance``. The result (per finding ``new``, ``unchanged`` or ``cancelled``) and the
entry's removal from the queue are one transaction (service/watch/queue.py): a worker killed
before it leaves the entry to be taken again when its lease ends.

A failed re-check (the FHIR server unreachable, refusing, too slow) goes back on the queue
with a growing wait; an order that cannot be checked at all (the server's data is not a
checkable order: a 4xx of the checker) is named in the result and does not hold up the
others.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from sqlalchemy.exc import SQLAlchemyError

from ..assemble import CheckRequest, ResourceIndex
from ..assemble.byid import from_server
from ..config import Settings
from ..engine import run_check
from ..errors import ServiceError
from ..facts.drugs import names_baclofen
from ..fhir_input.fetch import FhirClient, fhir_server_client
from ..fhirjson import JSON
from ..findings import Finding
from ..knowledge import Knowledge
from ..outbound.deadline import Deadline, FetchFailure
from ..output.fhir import render_result
from ..store import Store, record, record_key
from ..writeback import persist
from . import metrics
from .queue import Entry, FindingChange, WatchStore
from .receiver import patient_of
from .subscriptions import catch_up, catch_up_due, check
from .topics import has_focus, read_focus
from .worklist import sync

log = logging.getLogger("baclofen_check.watch")
ENDPOINT = "watch"
CHECK_TURN = "subscription-check"
CATCH_UP_DONE = "catch-up-done"
# choice: a re-check reads and writes with a deadline of its own per order, at least 10 s:
# nobody waits on the line for it, and a slow server should not turn into retries
MIN_RECHECK_DEADLINE_S = 10.0
IDLE_POLL_S = 0.2
HEARTBEAT_EVERY_S = 5.0


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class RecheckResult:
    order_refs: list[str] = field(default_factory=list)
    changes: list[FindingChange] = field(default_factory=list)
    not_checkable: list[str] = field(default_factory=list)


def active_baclofen_orders(client: FhirClient, patient_ref: str, kb: Knowledge,
                           deadline: Deadline) -> list[JSON]:
    """The patient's active baclofen MedicationRequests on the server."""

    pid = patient_ref.split("/", 1)[1]
    found = client.search(f"MedicationRequest?patient={quote(pid, safe='')}&status=active"
                          "&_include=MedicationRequest:medication&_count=100", deadline)
    index = ResourceIndex()
    for res in found:
        index.add(res)
    return [r for r in found if r.get("resourceType") == "MedicationRequest"
            and r.get("status") == "active" and patient_of(r) == patient_ref
            and isinstance(r.get("id"), str) and names_baclofen(r, index.resolve, kb)]


def from_notification(client: FhirClient, order_id: str, deadline: Deadline, now: datetime,
                      profile: str, kb: Knowledge) -> CheckRequest:
    """The re-check's adapter: an active order of the notified patient, read from the server
    as by id, reviewed (the re-check is of the therapy going on)."""
    return from_server(client, order_id, deadline, now, profile, kb, door="watch",
                       mode="review")


def _change(order_ref: str, finding_id: str, change: str, server_id: str | None,
            found: tuple[Finding, JSON] | None, earlier: dict[str, dict[str, str]]
            ) -> FindingChange:
    """``found``: the finding raised now with its DetectedIssue as written (None for a
    cancelled one: its rule and severity are those recorded before)."""
    rule, severity, issue = "", "", None
    if found is not None:
        finding, issue = found
        rule, severity = finding.rule_id, finding.severity
    elif finding_id in earlier:
        rule, severity = earlier[finding_id]["rule_id"], earlier[finding_id]["severity"]
    return FindingChange(order_ref, finding_id, rule, severity, change, server_id, issue)


class LeaseLost(Exception):
    """The entry's lease ran out and another worker took it: this re-check stops."""


def recheck(entry: Entry, settings: Settings, client: FhirClient, store: Store,
            ws: WatchStore, kb: Knowledge, owner: str | None = None) -> RecheckResult:
    """Re-check one patient (see the module text). Raises FetchFailure or ServiceError (5xx)
    when it should be tried again, LeaseLost when another worker has taken the entry (the
    lease is renewed before each order, so that a slow re-check keeps it)."""

    seconds = max(settings.outbound_timeout_s, MIN_RECHECK_DEADLINE_S)
    result = RecheckResult()
    orders = active_baclofen_orders(client, entry.patient_ref, kb, Deadline(seconds))
    earlier = {str(f["finding_id"]): {"rule_id": str(f["rule_id"]),
                                       "severity": str(f["severity"])}
               for f in ws.findings(entry.patient_ref)}
    first = entry.triggers[0] if entry.triggers else {}
    for order in orders:
        order_id = str(order["id"])
        order_ref = f"MedicationRequest/{order_id}"
        if owner is not None and not ws.renew(entry, owner, datetime.now(UTC)):
            raise LeaseLost(entry.patient_ref)
        started = time.perf_counter()   # the one latency start of this re-check
        now = datetime.now(UTC)
        deadline = Deadline(seconds)
        try:
            req = from_notification(client, order_id, deadline, now, settings.profile, kb)
        except ServiceError as exc:
            if exc.status >= 500:
                raise
            result.not_checkable.append(f"{order_ref}: {exc}")
            continue
        rendered = render_result(req, run_check(req, kb), kb)
        written = persist([(e.finding.id, e.entry) for e in rendered.issues], order_ref,
                          client, store, deadline, now)
        issues = {e.finding.id: (e.finding, e.resource) for e in rendered.issues}
        for kind, items in (("new", written.written), ("unchanged", written.kept),
                            ("cancelled", written.cancelled)):
            for p in items:
                result.changes.append(_change(order_ref, p.finding_id, kind, p.server_id,
                                              issues.get(p.finding_id), earlier))
        record(store, started=started, time=now, caller="watch", endpoint=ENDPOINT,
               hook=str(first.get("kind") or "")[:100] or None,
               hook_instance=str(first.get("resource") or "")[:200] or None,
               patient_ref=entry.patient_ref, order_refs=[order_ref],
               knowledge_version=kb.version,
               issues=[(e.finding, e.resource, None) for e in rendered.issues],
               record_id=record_key(ENDPOINT, str(entry.id), str(entry.attempts), order_ref))
        result.order_refs.append(order_ref)
    return result


class Worker:
    """Runs re-checks from the queue; one instance per process, ``threads`` at once."""

    def __init__(self, settings: Settings, store: Store, ws: WatchStore, kb: Knowledge,
                 client: Callable[[], FhirClient] | None = None) -> None:
        self.settings, self.store, self.ws, self.kb = settings, store, ws, kb
        self.client = client or (lambda: fhir_server_client(settings))
        self.owner = owner_id()
        self._beat = 0.0

    # --- one entry ------------------------------------------------------------------------

    def run_entry(self, entry: Entry, owner: str) -> str:
        """Re-check one claimed entry; returns ``done``, ``retry``, ``failed`` or ``lost``."""
        try:
            result = recheck(entry, self.settings, self.client(), self.store, self.ws, self.kb,
                             owner)
        except LeaseLost:
            log.warning("a re-check stopped: another worker took its entry", extra={
                "event": "watch-lease-lost", "patient_ref": entry.patient_ref})
            return "lost"
        except Exception as exc:  # noqa: BLE001 - any failure: retried later, never lost
            # only our own messages (they name calls, never clinical content) are kept
            message = str(exc) if isinstance(exc, FetchFailure | ServiceError) \
                else type(exc).__name__
            if not isinstance(exc, FetchFailure | ServiceError | SQLAlchemyError):
                log.error("a re-check failed unexpectedly", extra={
                    "event": "watch-recheck-error", "patient_ref": entry.patient_ref,
                    "error_type": type(exc).__name__})
            state = self.ws.fail(entry, owner, message, datetime.now(UTC))
            outcome = "failed" if state == "failed" else "retry"
            metrics.RECHECKS.labels(outcome).inc()
            log.warning("a re-check failed", extra={
                "event": "watch-recheck-failed", "patient_ref": entry.patient_ref,
                "attempt": entry.attempts, "outcome": outcome,
                "error_type": type(exc).__name__})
            return outcome
        now = datetime.now(UTC)
        self.ws.record_result(entry, owner, now, result.order_refs, result.changes,
                              error="; ".join(result.not_checkable)[:500] or None)
        self.worklist(entry.patient_ref, result.changes)
        metrics.RECHECKS.labels("done").inc()
        metrics.LATENCY.observe(max(0.0, (now - entry.created).total_seconds()))
        log.info("re-checked", extra={
            "event": "watch-recheck", "patient_ref": entry.patient_ref,
            "orders": len(result.order_refs), "events": entry.events,
            "new": sum(c.change == "new" for c in result.changes),
            "cancelled": sum(c.change == "cancelled" for c in result.changes)})
        return "done"

    def drain(self, owner: str | None = None, stop: threading.Event | None = None) -> int:
        """Re-check entries until none is due; returns how many were taken."""
        owner = owner or self.owner
        self.focus()
        n = 0
        while stop is None or not stop.is_set():
            entry = self.ws.claim(owner, datetime.now(UTC))
            if entry is None:
                return n
            self.run_entry(entry, owner)
            n += 1
        return n

    def focus(self) -> None:
        """The focus resources of id-only topic notifications: read from the server, their
        patients queued (service/watch/topics.py)."""
        if not has_focus(self.ws):
            return
        try:
            read_focus(self.ws, self.client(), self.settings, datetime.now(UTC))
        except (FetchFailure, ServiceError, SQLAlchemyError) as exc:
            log.warning("the id-only focus resources could not be read; tried again later",
                        extra={"event": "watch-focus-failed", "error_type": type(exc).__name__})

    def worklist(self, patient_ref: str | None = None,
                 changes: list[FindingChange] | None = None) -> None:
        """The worklist's part (issue 20, service/watch/worklist.py): the orders of new entries
        read, Tasks and pending mitigations written. What fails is tried again after the next
        re-check or period; it never fails the re-check."""
        try:
            sync(self.ws, self.settings, self.client(), self.kb, datetime.now(UTC), patient_ref,
                 changes)
        except (FetchFailure, ServiceError, SQLAlchemyError) as exc:
            log.warning("the worklist sync failed; tried again later", extra={
                "event": "worklist-sync-failed", "error_type": type(exc).__name__})

    # --- the periodic part ----------------------------------------------------------------

    def heartbeat(self, force: bool = False) -> None:
        if force or time.monotonic() - self._beat >= HEARTBEAT_EVERY_S:
            now = datetime.now(UTC)
            self.ws.beat(self.owner, now)
            depth = self.ws.depth()
            for state, count in depth.items():
                metrics.QUEUE_DEPTH.labels(state).set(count)
            self._beat = time.monotonic()

    def periodic(self, force: bool = False) -> None:
        """Every WATCH_CHECK_S (one worker of all that share the database): re-request the
        Subscriptions in error, then catch up. A catch-up asked for by a ping runs at once."""
        now = datetime.now(UTC)
        turn = self.ws.take_turn(CHECK_TURN, self.settings.watch_check_s, now) or force
        asked = catch_up_due(self.ws, now)
        if not turn and not asked:
            return
        try:
            client = self.client()
            if turn:
                try:   # a failed check (e.g. a token without Subscription scopes) does not
                    check(client, self.settings, self.kb,  # hold up the catch-up
                          Deadline(max(self.settings.outbound_timeout_s,
                                       MIN_RECHECK_DEADLINE_S)))
                except (FetchFailure, ServiceError) as exc:
                    log.warning("the Subscription check failed; tried again next period",
                                extra={"event": "watch-check-failed",
                                       "error_type": type(exc).__name__})
            found = catch_up(client, self.settings, self.kb, self.ws, now)
            if turn:
                self.worklist()
            self.ws.put(CATCH_UP_DONE, None, now)
            if found.queued:
                log.info("catch-up queued patients", extra={
                    "event": "watch-catch-up", "queued": len(found.queued)})
        except Exception as exc:  # noqa: BLE001 - tried again next period, whatever it was
            log.warning("the catch-up failed; tried again next period",
                        extra={"event": "watch-catch-up-failed",
                               "error_type": type(exc).__name__})

    def run(self, threads: int = 1, once: bool = False,
            stop: threading.Event | None = None) -> int:
        """``once``: the periodic part, then drain and return. Otherwise until ``stop``."""
        stop = stop or threading.Event()
        self.heartbeat(force=True)
        self.periodic(force=once)
        if once:
            n = self.drain()
            self.heartbeat(force=True)
            return n
        done = [0]

        def loop(name: str) -> None:
            while not stop.is_set():
                try:
                    taken = self.drain(f"{self.owner}/{name}", stop)
                except Exception as exc:  # noqa: BLE001 - the thread must keep working
                    log.warning("the watch queue is unreachable", extra={
                        "event": "watch-queue-unreachable", "error_type": type(exc).__name__})
                    taken = 0
                done[0] += taken
                if not taken:
                    stop.wait(IDLE_POLL_S)

        pool = [threading.Thread(target=loop, args=(f"t{i}",), daemon=True,
                                 name=f"watch-{i}") for i in range(max(1, threads))]
        for t in pool:
            t.start()
        while not stop.is_set():
            try:
                self.heartbeat()
                self.periodic()
            except SQLAlchemyError as exc:
                log.warning("the watch state is unreachable", extra={
                    "event": "watch-queue-unreachable", "error_type": type(exc).__name__})
            stop.wait(1.0)
        for t in pool:
            t.join(timeout=30)
        return done[0]
