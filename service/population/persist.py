"""``review --persist``: the review's findings written back to the FHIR server in batches.

The write-back rules of the by-id check (service/writeback.py), order by order: each
finding not yet written for its order is ``PUT DetectedIssue/bc-<hash>`` (conditional
creates where the server refuses client ids), what this service wrote earlier for a checked
order and no longer applies is set to ``cancelled``, and the store at DATABASE_URL remembers
what was written, so a second run writes nothing new. ``BATCH_ORDERS`` orders go in one
transaction.

Reads the review's own outputs: ``orders-checked.txt`` (every order checked, patient by
patient) and ``DetectedIssue.ndjson`` (in the same patient order), walked side by side, so
memory holds one batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ServiceError
from ..outbound.deadline import Deadline
from ..output.fhir import FINDING_SYSTEM
from ..store import Store
from ..writeback import persist_many
from .bulk import _client

BATCH_ORDERS = 50


class PersistError(Exception):
    """The write-back stopped; the message says how far it got."""


def _by_patient(path: Path, parse: Callable[[str], tuple[str, Any]]
                ) -> Iterator[tuple[str, list[Any]]]:
    """The lines of a file in runs of one patient: (patient reference, the parsed items)."""
    with path.open(encoding="utf-8") as stream:
        for patient, run in groupby((parse(line) for line in stream), key=lambda t: t[0]):
            yield patient, [item for _p, item in run]


def _issue(line: str) -> tuple[str, Any]:
    issue = json.loads(line)
    return str(issue["patient"]["reference"]), issue


def _order(line: str) -> tuple[str, Any]:
    patient, order = line.rstrip("\n").split(" ", 1)
    return patient, order


def _finding_id(issue: dict[str, Any]) -> str:
    """The finding id of a DetectedIssue of the review's file. Here the file is the input
    (the review's Findings are gone when --persist reads it): its identifier says it."""
    for ident in issue.get("identifier", []):
        if ident.get("system") == FINDING_SYSTEM:
            return str(ident.get("value"))
    raise ValueError("a DetectedIssue without its finding identifier")


def order_issues(out: Path) -> Iterator[tuple[list[tuple[str, dict[str, Any]]], str]]:
    """(the order's DetectedIssues as (finding id, Bundle entry) pairs, the order reference),
    for every order checked."""
    issues = _by_patient(out / "DetectedIssue.ndjson", _issue)
    pending = next(issues, None)
    for patient, orders in _by_patient(out / "orders-checked.txt", _order):
        mine: list[dict[str, Any]] = []
        if pending is not None and pending[0] == patient:
            mine = pending[1]
            pending = next(issues, None)
        for order in orders:
            yield [(_finding_id(i), {"resource": i}) for i in mine
                   if i.get("implicated") and i["implicated"][0].get("reference") == order], order


def persist_findings(out: Path, base_url: str, settings: Settings, now: datetime) -> str:
    client = _client(base_url, settings)
    store = Store(settings.database_url, settings.audit_retention_days)
    counts = {"orders": 0, "batches": 0, "written": 0, "kept": 0, "cancelled": 0}

    def flush(batch: list[tuple[list[tuple[str, dict[str, Any]]], str]]) -> None:
        deadline = Deadline(max(30.0, settings.outbound_timeout_s * 10))
        try:
            results = persist_many(batch, client, store, deadline, now)
        except ServiceError as exc:
            raise PersistError(
                f"{exc} (after {counts['orders']} orders in {counts['batches']} "
                "batches were written; running again is safe)") from exc
        counts["orders"] += len(batch)
        counts["batches"] += 1
        for r in results:
            counts["written"] += len(r.written)
            counts["kept"] += len(r.kept)
            counts["cancelled"] += len(r.cancelled)

    try:
        store.migrate()
        batch: list[tuple[list[tuple[str, dict[str, Any]]], str]] = []
        for item in order_issues(out):
            batch.append(item)
            if len(batch) == BATCH_ORDERS:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        store.close()
    return (f"{counts['orders']} orders in {counts['batches']} batches: "
            f"{counts['written']} DetectedIssues written, {counts['kept']} already there, "
            f"{counts['cancelled']} cancelled")
