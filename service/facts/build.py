"""The facts stage: one call's FHIR JSON in, its typed facts (``CallFacts``) out, once per call.

Every medicine is identified once (``Identified``, keyed by the resource), every order read
once (the checked ones as checked orders, the others as unchecked ones, which are both other
orders and history), the medicines in use, the dispenses and administrations read once; the
patient and kidney facts once per patient age (the age is at each order's start, and the age
decides the freshness limits and the kidney formula); the history per order only in what is
relative to that order (service/facts/history.py).
"""

from __future__ import annotations

from datetime import datetime

from ..fhirjson import JSON, parse_instant
from ..knowledge import Knowledge
from ..model import AgeFacts, CallFacts, OrderContext, OrderFacts, PatientFacts, RenalFacts
from .drugs import Identified
from .history import HistorySource
from .medications import medication_uses
from .orders import read_order
from .patient import age_at, patient_facts
from .renal import read_renal
from .source import CallInput

# clinical-rules section 1: a dispense or administration in these states shows nothing taken
_NOT_GIVEN = frozenset({"entered-in-error", "cancelled", "declined", "not-done", "preparation"})


def build_facts(req: CallInput, kb: Knowledge) -> CallFacts:
    """The facts of one call (``req``: a CheckRequest, service/facts/source.py)."""
    check_time, resolve = req.check_time, req.resolve
    identified = Identified(resolve, kb)
    orders = tuple(
        read_order(it.resource, it.ref, resolve, kb, check_time, checked=True,
                   drug=identified(it.resource))
        for it in req.orders
    )
    read_once: dict[int, tuple[JSON, OrderFacts]] = {}

    def read_unchecked(resource: JSON, ref: str) -> OrderFacts:
        """A MedicationRequest that is not checked, read once per call (it is both another
        order and, when it is baclofen, history of every checked order)."""
        hit = read_once.get(id(resource))
        if hit is None or hit[0] is not resource:
            hit = read_once[id(resource)] = (resource, read_order(
                resource, ref, resolve, kb, check_time, drug=identified(resource)))
        return hit[1]

    # only baclofen orders are read as other orders: the rules look at no other (duplicates,
    # history); other medicines are read as MedicationUses
    others = tuple(
        read_unchecked(it.resource, it.ref)
        for it in req.context
        if it.type == "MedicationRequest"
        and it.resource.get("status") not in {"entered-in-error"}
        and identified(it.resource).baclofen
    )
    meds = medication_uses(req.orders, req.context, check_time, identified, kb)
    context_items = [(it.ref, it.resource) for it in req.context]
    # the other orders of the call that are not drafts are history too (a stopped order)
    history = HistorySource(
        context_items + [(it.ref, it.resource) for it in req.orders
                         if it.resource.get("status") != "draft"],
        resolve, kb, check_time, read_unchecked, frozenset(it.ref for it in req.orders),
        identified)
    patient_ref = req.patient.ref if req.patient else "Patient/unknown"
    patient_json = req.patient.resource if req.patient else {}
    adult_from = kb.typed.patient_context.renal.cockcroft_gault.age_from
    by_age: dict[AgeFacts | None, tuple[PatientFacts, RenalFacts]] = {}

    def patient_at(start: datetime) -> tuple[PatientFacts, RenalFacts]:
        """The patient and kidney facts for an order starting at ``start``: the same for
        every order at which the patient has the same age."""
        age = age_at(patient_json.get("birthDate"), start)
        if age not in by_age:
            patient = patient_facts(patient_json, patient_ref, start, context_items,
                                    check_time, kb)
            egfr_only = patient.age is not None and patient.age.low_years < adult_from
            by_age[age] = patient, read_renal(context_items, patient, check_time, kb,
                                              egfr_only)
        return by_age[age]

    authored: dict[str, datetime | None] = {}
    for it in req.orders:
        authored.setdefault(it.ref, parse_instant(it.resource.get("authoredOn"),
                                                  check_time.tzinfo))
    given: list[bool] = []  # a baclofen dispense or administration in the context, read once

    def shows_taken(order: OrderFacts) -> bool:
        """A cancelled order counts as a stop only when a dispense, an administration or a
        start in the past shows the drug was taken (clinical-rules section 1).

        choice: the start in the past is the order's boundsPeriod.start (authoredOn is always
        in the past and says nothing about taking); any baclofen dispense handed over or
        administration in the context counts.
        """
        if order.start < check_time and order.start != authored.get(order.ref):
            return True
        if not given:
            given.append(any(_given(it.type, it.resource) and identified(it.resource).baclofen
                             for it in req.context))
        return given[0]

    contexts = []
    for order in orders:
        patient, renal = patient_at(order.start)
        contexts.append(OrderContext(
            patient=patient, renal=renal, history=history.for_order(order),
            shows_taken=order.status == "cancelled" and shows_taken(order)))
    return CallFacts(
        check_time=check_time, profile=req.profile, mode=req.mode, hook=req.hook,
        orders=orders, contexts=tuple(contexts), others=others, medications=meds,
        warnings=tuple(req.warnings), unavailable=tuple(req.unavailable))


def _given(rtype: str, resource: JSON) -> bool:
    """A dispense handed over, or an administration, that was not cancelled or an error."""
    if rtype not in {"MedicationDispense", "MedicationAdministration"}:
        return False
    if resource.get("status") in _NOT_GIVEN:
        return False
    return rtype != "MedicationDispense" or bool(resource.get("whenHandedOver"))
