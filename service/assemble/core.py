"""``assemble(pieces)``: the one place a CheckRequest is built, for every front door.

An adapter (one per door, each beside its door) only says where the pieces come from: the
orders (or a whole record to choose them from), the Patient, the context resources, the keys
that could not be read, the mode, the hook, the check time and the profile. Here, for all of
them and once: the tolerant normaliser (service/assemble/normalise.py), the validation of
what must be valid (service/assemble/validate.py), the context checks, the references, and
every refusal through the status table (service/assemble/policy.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..checkrequest import CONTEXT_TYPES, CheckRequest, Item, ResourceIndex, item_for
from ..errors import Problem, ServiceError
from ..facts.drugs import medication_of
from ..facts.products import is_baclofen
from ..fhirjson import JSON, as_dict, as_str
from ..fhirref import parse_reference
from ..knowledge import Knowledge
from . import policy
from .normalise import normalise_resource, normalised_copy, offset_text
from .validate import has_medication, usable_context, validate_model

log = logging.getLogger("baclofen_check.assemble")
STOP_STATUSES = frozenset({"stopped", "cancelled"})


@dataclass
class Source:
    """One resource as a door found it: where it was (for messages), under which key."""

    resource: JSON
    where: str | None = None      # FHIRPath of where it was given (warnings name it)
    key: str | None = None        # the prefetch key or search it came from
    full_url: str | None = None   # a Bundle entry's fullUrl


# a door's normaliser: in place or on a copy (policy.READING)
_Normalise = Callable[[Source], JSON]


@dataclass
class Pieces:
    """What an adapter says about one call (see the module text)."""

    door: str                     # a key of policy.DOORS: which statuses apply
    shape: str                    # a key of policy.READING: how the pieces are read
    check_time: datetime
    profile: str
    orders: list[Source] | None = None   # None: chosen from ``record``
    patient: Source | None = None
    context: list[Source] = field(default_factory=list)
    record: list[Source] = field(default_factory=list)   # a whole record (Bundle, export)
    unavailable: list[str] = field(default_factory=list)
    mode: str = "order"
    hook: str | None = None
    notes: list[Problem] = field(default_factory=list)   # what the adapter noticed
    patient_id: str | None = None   # the id the call names (CDS): a bare Patient when none
    patient_fetched: bool = False   # read by the service, not sent by the caller
    patient_label: str = "patient"
    reviewed: bool = False          # the orders were chosen from the record for a review
    kb: Knowledge | None = None     # to choose a record's baclofen orders


def assemble(p: Pieces) -> CheckRequest:
    reading = policy.READING[p.shape]
    offset = offset_text(p.check_time.tzinfo)

    def normalised(src: Source) -> JSON:
        if reading.copy:
            return normalised_copy(src.resource, offset)
        return normalise_resource(src.resource, offset)

    req = (_from_record(p, normalised) if p.orders is None
           else _from_lists(p, reading, normalised))
    _check_subjects(req, p.door)
    if policy.refused("order-medication-unreadable", p.door):
        unknown = _unidentified(req)
        if unknown:
            raise policy.refuse_one(
                "order-medication-unreadable", p.door,
                "the medication of these orders could not be read: " + ", ".join(unknown[:10]),
                "context.draftOrders", "not-found")
    return req


# --- orders, patient and context given apiece -------------------------------------------------

def _from_lists(p: Pieces, reading: policy.Reading, normalised: _Normalise) -> CheckRequest:
    warnings = list(p.notes)
    unavailable = list(p.unavailable)
    orders: list[Item] = []
    stopped: list[Item] = []
    for n, src in enumerate(p.orders or []):
        res = normalised(src)
        label = reading.order_label.format(n=n + 1, ref=item_for(res, src.full_url).ref)
        if not has_medication(res):
            warnings.append(_no_medication_yet(label))
            continue
        try:
            warnings += _validated(res, label, "order-invalid", p.door)
        except ServiceError:
            if not p.reviewed or policy.refused("reviewed-order-invalid", p.door):
                raise
            log.warning("an active baclofen order of the record cannot be read; not reviewed",
                        extra={"event": "review-order-unreadable",
                               "order_refs": [f"MedicationRequest/{res.get('id')}"]})
            continue
        item = item_for(res, src.full_url)
        if not reading.stops_checked and res.get("status") in STOP_STATUSES:
            warnings.append(Problem(
                f"{item.ref}: an order with status {res.get('status')!r} is not checked "
                "through CDS Hooks (no hook carries a stop); check the stop with "
                "POST /MedicationRequest/$check", "not-supported", None, "warning"))
            stopped.append(item)
            continue
        orders.append(item)

    patient = _patient(p, normalised, warnings)
    if patient is None:
        if policy.refused("no-patient", p.door):
            raise policy.refuse_one("no-patient", p.door, "no patient: give the Patient",
                                    code="required")
        # choice: when the Patient cannot be had the orders are still checked (the dose
        # ceilings do not need it) against a bare Patient carrying only the id, and
        # context.unavailable says what could not be checked.
        pid = p.patient_id or "unknown"
        patient = Item({"resourceType": "Patient", "id": pid}, f"Patient/{pid}", True)
        if "patient" not in unavailable:
            unavailable.insert(0, "patient")

    prefetch = reading.context == "prefetch"
    seen = {it.ref for it in orders + stopped} | {patient.ref}
    context: list[Item] = list(stopped)
    for src in p.context:
        res = normalised(src)
        item = item_for(res, src.full_url)
        if prefetch:
            # search results: each resource once; the Patient and a search's outcome are not
            # context
            if item.ref in seen:
                continue
            seen.add(item.ref)
            if item.type == "Patient":
                continue
        why = usable_context(item)
        if why:
            if not (prefetch and item.type == "OperationOutcome"):
                warnings.append(_skipped(item, why, src))
            continue
        context.append(item)
    index = ResourceIndex()
    for item in [*orders, patient, *context]:
        index.add(item.resource, None if item.has_id else item.ref)
    return CheckRequest(orders, patient, context, p.check_time, p.profile, p.mode, p.hook,
                        warnings, unavailable, index=index)


def _patient(p: Pieces, normalised: _Normalise, warnings: list[Problem]) -> Item | None:
    if p.patient is None:
        return None
    res = normalised(p.patient)
    if p.patient_id:
        res.setdefault("id", p.patient_id)
    problem = "fetched-patient-invalid" if p.patient_fetched else "patient-invalid"
    try:
        warnings += validate_model(res, p.patient_label)
    except ServiceError as exc:
        if policy.refused(problem, p.door):
            raise policy.refuse(problem, p.door, exc.problems) from exc
        # the service's own read, not the caller's mistake: the patient is unavailable
        warnings.extend(Problem(q.message, q.code, None, "warning") for q in exc.problems)
        return None
    return item_for(res, p.patient.full_url)


def _validated(res: JSON, label: str, problem: str, door: str) -> list[Problem]:
    try:
        return validate_model(res, label)
    except ServiceError as exc:
        raise policy.refuse(problem, door, exc.problems) from exc


# --- orders chosen from a whole record (a Bundle, a patient of an export) ----------------------

def _from_record(p: Pieces, normalised: _Normalise) -> CheckRequest:
    warnings = list(p.notes)
    index = ResourceIndex()
    items: list[tuple[Item, Source]] = []
    for src in p.record:
        res = normalised(src)
        index.add(res, src.full_url)
        items.append((item_for(res, src.full_url), src))

    distinct: dict[str, Item] = {}
    for it, _ in items:
        if it.type == "Patient":
            distinct.setdefault(it.ref, it)   # the same Patient twice is one patient
    patients = list(distinct.values())
    if len(patients) != 1:
        raise policy.refuse_one(
            "several-patients" if patients else "no-patient", p.door,
            "the Bundle must hold exactly one Patient; it holds "
            f"{len(patients) if patients else 'none'}", "Bundle.entry.resource.ofType(Patient)",
            "required")
    patient = patients[0]
    warnings += _validated(patient.resource, "patient", "patient-invalid", p.door)
    drafts = [it for it, _ in items
              if it.type == "MedicationRequest" and it.resource.get("status") == "draft"]
    empty = [d for d in drafts if not has_medication(d.resource)]
    for it in empty:
        warnings.append(_no_medication_yet(it.ref))
        drafts.remove(it)
        items = [(i, s) for i, s in items if i is not it]
        index.discard(it.resource)
    mode = "order"
    if drafts or empty:
        # drafts whose medicine is not chosen yet are still the orders of this call: they are
        # answered with nothing to check, not by a review of the patient's other orders
        order_items = drafts
    else:
        order_items = _active_baclofen([it for it, _ in items], index, p.kb)
        mode = "review"
        if not order_items:
            raise policy.refuse_one(
                "nothing-to-check", p.door,
                "nothing to check: the Bundle holds no draft MedicationRequest and no active "
                "baclofen MedicationRequest", "Bundle.entry.resource.ofType(MedicationRequest)",
                "not-found")
    for n, it in enumerate(order_items):
        warnings += _validated(it.resource, f"order {n + 1} ({it.ref})", "order-invalid",
                               p.door)
    order_ids = {id(it) for it in order_items}
    context = []
    for it, src in items:
        if id(it) in order_ids or it.type == "Patient":
            continue
        if it.type not in CONTEXT_TYPES:
            continue  # other resources (Practitioner, Encounter ...) only serve references
        why = usable_context(it)
        if why:
            warnings.append(_skipped(it, why, src))
            index.discard(it.resource)
            continue
        context.append(it)
    return CheckRequest(order_items, patient, context, p.check_time, p.profile, mode, p.hook,
                        warnings, list(p.unavailable), index=index)


def _active_baclofen(items: list[Item], index: ResourceIndex, kb: Knowledge | None
                     ) -> list[Item]:
    if kb is None:   # every door that reviews a record passes its caller's knowledge
        raise ValueError("choosing a record's baclofen orders needs the knowledge (Pieces.kb)")
    out = []
    for it in items:
        if it.type == "MedicationRequest" and it.resource.get("status") == "active":
            concept, med = medication_of(it.resource, lambda ref, w: index.resolve(ref, w))
            if is_baclofen(concept, med, kb):
                out.append(it)
    return out


# --- shared checks ---------------------------------------------------------------------------

def _no_medication_yet(which: str) -> Problem:
    return Problem(f"{which} names no medication yet: nothing to check until one is chosen",
                   "informational", "MedicationRequest.medication", "information")


def _skipped(item: Item, why: str, src: Source) -> Problem:
    key = f" ({src.key})" if src.key else ""
    return Problem(f"context {item.type} {item.ref}{key} skipped: {why}", "invalid", src.where,
                   "warning")


def _check_subjects(req: CheckRequest, door: str) -> None:
    """An order written for another patient than the one given is refused; a context
    resource about another patient is skipped with a warning.

    choice: a mismatch between MedicationRequest.subject and the Patient is a request the
    checker cannot answer safely, so it fails instead of checking against the wrong patient.
    Another patient's labs or orders must not count either (a false duplicate, a wrong renal
    value), so such context is left out and the warning names it.
    """
    if req.patient is None:
        return
    for n, order in enumerate(req.orders):
        other = _other_patient(req, order.resource)
        if other is not None:
            raise policy.refuse_one(
                "order-for-other-patient", door,
                f"order {n + 1} is for {other}, not for {_patient_name(req)}",
                "MedicationRequest.subject", "processing")
    kept = []
    for item in req.context:
        other = _other_patient(req, item.resource)
        if other is not None:
            req.warnings.append(Problem(
                f"context {item.type} {item.ref} skipped: it is for {other}, not for "
                f"{_patient_name(req)}", "invalid", f"{item.type}.subject", "warning"))
            if req.index is not None:
                req.index.discard(item.resource)
            continue
        kept.append(item)
    req.context = kept


def _patient_name(req: CheckRequest) -> str:
    pid = req.patient.resource.get("id") if req.patient else None
    return f"Patient/{pid}" if isinstance(pid, str) and pid else "the patient given"


def _other_patient(req: CheckRequest, resource: JSON) -> str | None:
    """The reference when ``resource.subject`` names a patient other than the one given."""
    if req.patient is None:
        return None
    subject = as_dict(resource.get("subject"))
    ref = as_str(subject.get("reference"))
    if ref is None:
        return None
    target = req.resolve(subject, resource)
    if target is not None:
        if target is not req.patient.resource and target.get("resourceType") == "Patient":
            return ref
        return None
    pid = req.patient.resource.get("id")
    named = parse_reference(ref)
    if named is not None and named.type == "Patient" and pid and named.id != pid:
        return ref
    return None


def _unidentified(req: CheckRequest) -> list[str]:
    """Orders whose drug cannot be known: a Medication reference that could not be read, with
    no code or name to fall back on."""
    out = []
    for it in req.orders:
        ref = as_dict(it.resource.get("medicationReference"))
        if not ref or it.resource.get("medicationCodeableConcept"):
            continue
        if req.resolve(ref, it.resource) is None and as_str(ref.get("display")) is None:
            out.append(f"{it.ref} ({as_str(ref.get('reference')) or 'no reference'})")
    return out
