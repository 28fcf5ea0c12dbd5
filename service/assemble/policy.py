"""The status policy: which problem of a request is refused with which status, at which door.

ONE table (``STATUS``). A row is a problem the assembler or an adapter can meet; a column is a
family of front doors; a cell is the HTTP status the call is refused with, or ``None`` when the
call is not refused (what cannot be used is left out with a warning, or named in
``CheckRequest.unavailable`` for the ``context.unavailable`` finding). Where the families differ
the reason is written beside the row. Every adapter and the assembler raise through
``refuse()``, so no status is written anywhere else on the way in.

How each door reads its pieces (a copy or in place, how orders are named in messages, whether a
stop is checked, how context is read) is the second table, ``READING``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import Problem, ServiceError

Family = Literal["native", "server", "cds"]
CDS_HOOKS = "cds-hooks"

# every front door and its family
DOORS: dict[str, Family] = {
    "parameters": "native",            # POST /MedicationRequest/$check, a Parameters body
    "bundle": "native",                # ... a Bundle body
    "ndjson": "native",                # one line of an NDJSON batch (HTTP or the CLI)
    "bulk": "native",                  # one patient of a Bulk Data export (review)
    "by-id": "server",                 # POST /MedicationRequest/{id}/$check
    "watch": "server",                 # a notification's re-check of a patient's orders
    "order-select": "cds",
    "order-sign": "cds",
    "medication-prescribe": "cds",
    "patient-view": "cds",
    CDS_HOOKS: "cds",                  # a hook call before its hook is known
}

_Row = dict[Family, int | None]
_ALL_400: _Row = {"native": 400, "server": 400, "cds": 400}
_ALL_422: _Row = {"native": 422, "server": 422, "cds": 422}
_NEVER: _Row = {"native": None, "server": None, "cds": None}

STATUS: dict[str, _Row] = {
    # the body is not the shape of its door (not JSON object, a parameter without a name, a
    # hook call without hookInstance ...)
    "body-invalid": _ALL_400,
    # a resource that is not a Parameters or a Bundle (a lone Patient, say)
    "not-checkable": _ALL_422,
    # what a rule needs of an order (status, subject, medicine, a route) is invalid
    "order-invalid": _ALL_400,
    # ... of an order the service chose from the record for a review. CDS (patient-view): the
    # record's content, not the caller's request: left out (logged by id), the others checked
    "reviewed-order-invalid": {"native": 400, "server": 400, "cds": None},
    # ... of the Patient the caller sent (birth date, gender)
    "patient-invalid": _ALL_400,
    # ... of a Patient the service read itself. CDS: the server's data, not the caller's
    # mistake: the patient is unavailable and the orders are still checked. By id: the order
    # cannot be checked without its patient (as today: 400 naming the fields)
    "fetched-patient-invalid": {"native": 400, "server": 400, "cds": None},
    # no order given (Parameters)
    "no-order": _ALL_422,
    # a record without drafts and without active baclofen orders (Bundle, bulk patient)
    "nothing-to-check": _ALL_422,
    # no Patient. CDS: checked against a bare Patient with the call's id, "patient" unavailable
    "no-patient": {"native": 422, "server": 422, "cds": None},
    "several-patients": _ALL_422,
    # an order written for another patient than the one given. CDS: the hook's own context
    # disagrees with itself, which is the caller's request being wrong (400)
    "order-for-other-patient": {"native": 422, "server": 422, "cds": 400},
    # a context resource about another patient: left out with a warning
    "context-for-other-patient": _NEVER,
    # a context resource the rules cannot read: left out with a warning
    "context-unreadable": _NEVER,
    # a context read that failed (a prefetch key, a server search): named as unavailable
    "context-read-failed": _NEVER,
    # an order whose Medication reference could not be read and that has no code or name.
    # CDS Hooks answers 412 when what the service needs of the call cannot be had; the native
    # doors check the order and say its drug could not be identified
    "order-medication-unreadable": {"native": None, "server": None, "cds": 412},
    # order-select names orders not in draftOrders (CDS Hooks: 412)
    "selection-missing": {"native": None, "server": None, "cds": 412},
    # the order's subject is missing or not a Patient on the server
    "order-names-no-patient": _ALL_422,
    # a read of what the check cannot go without (the order, its medication, the patient)
    # failed upstream: 502, or 504 when the deadline passed
    "upstream-failed": {"native": 502, "server": 502, "cds": 502},
    "upstream-timeout": {"native": 504, "server": 504, "cds": 504},
    # the server answered something else than what was read (a Bundle for a read, say)
    "upstream-wrong-answer": {"native": 502, "server": 502, "cds": 502},
}


def family(door: str) -> Family:
    return DOORS[door]


def status(problem: str, door: str) -> int | None:
    """The status ``problem`` is refused with at ``door``; None: not refused."""
    return STATUS[problem][DOORS[door]]


def refused(problem: str, door: str) -> bool:
    return status(problem, door) is not None


def refuse(problem: str, door: str, problems: list[Problem]) -> ServiceError:
    """The error to raise for ``problem`` at ``door`` (which must refuse it)."""
    code = status(problem, door)
    if code is None:
        raise ValueError(f"{problem} is not refused at {door}")
    return ServiceError(code, problems)


def refuse_one(problem: str, door: str, message: str, expression: str | None = None,
               code: str = "invalid") -> ServiceError:
    return refuse(problem, door, [Problem(message, code, expression)])


# --- how each body shape is read -------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    copy: bool                 # normalise a copy (the caller's data stays as sent) or in place
    order_label: str           # how messages name an order: "{n}" or "{n} ({ref})"
    stops_checked: bool        # a stopped or cancelled order is checked (else it is history)
    context: Literal["listed", "record", "prefetch"]
    # listed: every context resource given must be one the rules read (else a warning);
    # record: the record's other resources only serve references; prefetch: search results,
    # each resource once, Patients and OperationOutcomes of a search are not context


READING: dict[str, Reading] = {
    "parameters": Reading(False, "order {n}", True, "listed"),
    "bundle": Reading(False, "order {n} ({ref})", True, "record"),
    # clinical-rules section 1: a stop is checked only when it comes as a Parameters order;
    # no hook carries one, so a stopped order of a hook call is history
    "hook": Reading(True, "order {n} ({ref})", False, "prefetch"),
}
