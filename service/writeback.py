"""Write the DetectedIssues of a by-id check back to the FHIR server (``?persist=true``).

One transaction Bundle per check:
- each DetectedIssue not yet written for this order is ``PUT DetectedIssue/<id>``, the id
  derived from its per-finding identifier (``bc-<hash>``): update-as-create, so the same
  finding always lands on the same resource. Findings this service already wrote for the order
  (its own record in the store) are not sent again, so a repeat writes nothing new;
- where the server refuses client-assigned ids (it answers the PUT transaction with 400, 403,
  405, 409 or 422), the transaction is sent once more with conditional creates
  (``POST`` with ``ifNoneExist: identifier=urn:baclofen-check:finding|<hash>``);
- the DetectedIssues written earlier for the same order whose finding no longer applies are
  read back and ``PUT`` again with ``status: cancelled`` in the same transaction (what is on
  the server, ``mitigation`` included, is kept; a cancelled one that applies again keeps its
  ``mitigation`` when written anew). The list
  comes from the store, not from a search: servers may ignore search parameters they do not
  support.

The result Bundle then carries the server ids (``DetectedIssue.id`` and ``fullUrl``), and an
information issue names what was cancelled.

The DetectedIssues come as (finding id, Bundle entry) pairs: the id from the Finding
(service/findings.py), never read back from the rendered JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import Problem, ServiceError
from .fhir_input.fetch import FhirClient
from .fhirjson import JSON
from .fhirref import parse_reference
from .outbound.deadline import Deadline, FetchFailure
from .outbound.pool import fetch_all
from .output.fhir import FINDING_SYSTEM
from .store import PersistedIssue, Store

REFUSED_CLIENT_IDS = frozenset({400, 403, 405, 409, 422})


@dataclass
class WriteResult:
    written: list[PersistedIssue]      # new this time
    kept: list[PersistedIssue]         # written before, still applying
    cancelled: list[PersistedIssue]    # written before, no longer applying


def _server_id(entry: JSON, fallback: str) -> str:
    location = str((entry.get("response") or {}).get("location") or "")
    target = parse_reference(location)
    if target is not None and target.type == "DetectedIssue":
        return target.id
    resource = entry.get("resource")
    if isinstance(resource, dict) and isinstance(resource.get("id"), str):
        return str(resource["id"])
    return fallback


def _write_failed(failure: FetchFailure) -> ServiceError:
    if failure.reason == "timeout":
        return ServiceError(504, [Problem(
            f"the FHIR server did not confirm the write-back in time ({failure.message}); the "
            "transaction may or may not have been applied: repeat the request (it is "
            "idempotent)", "timeout")])
    return ServiceError(502, [Problem(
        f"the DetectedIssues could not be written to the FHIR server: {failure.message}",
        "transient")])


# (finding id, the Bundle entry of its DetectedIssue: ``{"fullUrl": ..., "resource": ...}``)
Issues = Sequence[tuple[str, JSON]]


def persist(issues: Issues, order_ref: str, client: FhirClient, store: Store,
            deadline: Deadline, now: datetime) -> WriteResult:
    """Write, cancel, record; rewrite the ``issues``' entries (so the result Bundle holding
    them) in place with the server ids.

    Raises ServiceError 502/504 when the server refuses or does not answer in time (the
    transaction is all-or-nothing on the server, and nothing is recorded then)."""
    return persist_many([(issues, order_ref)], client, store, deadline, now)[0]


@dataclass
class _Plan:
    issues: Issues
    order_ref: str
    to_write: dict[str, JSON]
    kept: list[PersistedIssue]
    stale: list[PersistedIssue]
    again: list[PersistedIssue] = field(default_factory=list)   # cancelled, applying again


def persist_many(items: Sequence[tuple[Issues, str]], client: FhirClient, store: Store,
                 deadline: Deadline, now: datetime) -> list[WriteResult]:
    """``persist`` for several orders (each its DetectedIssues and its order reference) in one
    transaction; the same rules order by order. All or nothing, as one transaction is."""
    plans: list[_Plan] = []
    for issues, order_ref in items:
        earlier = {p.finding_id: p for p in store.persisted_for_order(order_ref)}
        current = {fid: entry["resource"] for fid, entry in issues}
        plans.append(_Plan(
            issues, order_ref,
            to_write={fid: i for fid, i in current.items()
                      if fid not in earlier or earlier[fid].status == "cancelled"},
            kept=[p for fid, p in earlier.items()
                  if fid in current and p.status != "cancelled"],
            stale=[p for fid, p in earlier.items()
                   if fid not in current and p.status != "cancelled"],
            again=[p for fid, p in earlier.items()
                   if fid in current and p.status == "cancelled"]))

    # read back what must be cancelled (the latest version on the server)
    stale = [p for plan in plans for p in plan.stale]
    # and what applies again after a cancellation: its mitigation (a pharmacist's resolution
    # from the worklist, service/watch/worklist.py) is kept when it is written anew
    again = [p for plan in plans for p in plan.again]
    reads = fetch_all({p.server_id: (lambda sid: lambda: client.read(
        f"DetectedIssue/{sid}", deadline))(p.server_id) for p in stale + again}, deadline)
    for plan in plans:
        for p in plan.again:
            found_again = reads.get(p.server_id)
            if isinstance(found_again, dict) and found_again.get("mitigation"):
                plan.to_write[p.finding_id]["mitigation"] = found_again["mitigation"]
    cancel_entries: list[JSON] = []
    cancelled: dict[str, list[PersistedIssue]] = {plan.order_ref: [] for plan in plans}
    for p in stale:
        found = reads.get(p.server_id)
        if isinstance(found, FetchFailure):
            if found.status in {404, 410}:  # gone from the server: nothing left to cancel
                cancelled[p.order_ref].append(PersistedIssue(p.order_ref, p.finding_id,
                                                             p.server_id, "cancelled"))
                continue
            raise _write_failed(found)
        resource: dict[str, Any] = dict(found or {})
        resource.pop("meta", None)
        resource["status"] = "cancelled"
        cancel_entries.append({"resource": resource, "request": {
            "method": "PUT", "url": f"DetectedIssue/{p.server_id}"}})
        cancelled[p.order_ref].append(PersistedIssue(p.order_ref, p.finding_id, p.server_id,
                                                     "cancelled"))

    to_write = {fid: issue for plan in plans for fid, issue in plan.to_write.items()}
    written: dict[str, list[PersistedIssue]] = {plan.order_ref: [] for plan in plans}
    if to_write or cancel_entries:
        order = [(plan.order_ref, fid) for plan in plans for fid in plan.to_write]
        response = _send(client, to_write, cancel_entries, deadline, conditional=False)
        if response is None:
            response = _send(client, to_write, cancel_entries, deadline, conditional=True)
            assert response is not None
        entries = response.get("entry") or []
        for n, (order_ref, fid) in enumerate(order):
            entry = entries[n] if n < len(entries) and isinstance(entries[n], dict) else {}
            written[order_ref].append(PersistedIssue(
                order_ref, fid, _server_id(entry, str(to_write[fid]["id"])), "final"))
        store.record_persisted([p for plan in plans for p in written[plan.order_ref]
                                + cancelled[plan.order_ref]], now)

    results = []
    for plan in plans:
        ids = {p.finding_id: p.server_id for p in plan.kept + written[plan.order_ref]}
        for fid, entry in plan.issues:
            res = entry["resource"]
            res["id"] = ids[fid]
            entry["fullUrl"] = f"{client.base_url}/DetectedIssue/{res['id']}"
        results.append(WriteResult(written[plan.order_ref], plan.kept,
                                   cancelled[plan.order_ref]))
    return results


def _send(client: FhirClient, to_write: dict[str, JSON], cancel_entries: list[JSON],
          deadline: Deadline, conditional: bool) -> JSON | None:
    entries: list[JSON] = []
    for fid, issue in to_write.items():
        if conditional:
            body = {k: v for k, v in issue.items() if k != "id"}
            entries.append({"fullUrl": f"urn:uuid:{_uuid(fid)}", "resource": body, "request": {
                "method": "POST", "url": "DetectedIssue",
                "ifNoneExist": f"identifier={FINDING_SYSTEM}|{fid}"}})
        else:
            entries.append({"fullUrl": f"{client.base_url}/DetectedIssue/{issue['id']}",
                            "resource": issue,
                            "request": {"method": "PUT", "url": f"DetectedIssue/{issue['id']}"}})
    transaction = {"resourceType": "Bundle", "type": "transaction",
                   "entry": entries + cancel_entries}
    try:
        response = client.transaction(transaction, deadline)
    except FetchFailure as failure:
        if not conditional and failure.reason == "http-status" and \
                failure.status in REFUSED_CLIENT_IDS and to_write:
            return None
        raise _write_failed(failure) from failure
    if response.get("resourceType") != "Bundle":
        raise ServiceError(502, [Problem("the FHIR server answered the transaction with a "
                                         f"{response.get('resourceType')}", "transient")])
    return response


def _uuid(text: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{FINDING_SYSTEM}|{text}"))


def cancellation_note(result: WriteResult) -> Problem | None:
    if not result.cancelled:
        return None
    names = ", ".join(f"DetectedIssue/{p.server_id}" for p in result.cancelled)
    return Problem(f"no longer applies, marked cancelled on the FHIR server: {names}",
                   "informational", None, "information")
