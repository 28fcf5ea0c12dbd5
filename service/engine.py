"""The checker on one screen: request -> facts -> findings.

``run_check`` is pure: everything it needs (the check time included) is in the CheckRequest,
and it returns findings plus notes about what could not be checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .dosing import names_baclofen, read_order
from .errors import Problem
from .facts.history import build_history
from .facts.medications import medication_uses
from .facts.patient import patient_facts
from .facts.renal import read_renal
from .fhir_input.request import CheckRequest
from .fhirjson import JSON
from .findings import Finding
from .knowledge import Knowledge, frac
from .model import OrderFacts
from .rules import (
    RuleContext,
    interactions,
    intrathecal,
    oral,
    order_quality,
    pediatric,
    titration,
    withdrawal,
)
from .rules import context as context_rules
from .rules import renal as renal_rules

Family = Callable[[RuleContext, OrderFacts], list[Finding]]

# Which rule families run on which order (clinical-rules section 1: intrathecal orders get
# sections 6, 8 and pregnancy only).
ORAL_FAMILIES: tuple[Family, ...] = (
    order_quality.rules, oral.rules, pediatric.rules, intrathecal.with_oral_rule,
    interactions.rules, interactions.pregnancy_rule, withdrawal.short_taper,
    renal_rules.rules, titration.rules, withdrawal.cut_rules, interactions.alcohol_rule,
    interactions.lactation_rule,
)
# choice: lactation also runs on intrathecal orders (a low note; the intrathecal labels'
# section 8.2 says the same as the oral ones); interaction.alcohol is section 8.
INTRATHECAL_FAMILIES: tuple[Family, ...] = (
    order_quality.rules, intrathecal.rules, withdrawal.it_changes, interactions.rules,
    interactions.pregnancy_rule, interactions.alcohol_rule, interactions.lactation_rule,
)
STOP_FAMILIES: tuple[Family, ...] = (withdrawal.stop_rules,)
DOSE_STATUSES = frozenset({"draft", "active", "on-hold"})


def was_taken(req: CheckRequest, order: OrderFacts) -> bool:
    """A cancelled order counts as a stop only when a dispense, an administration or a start
    in the past shows the drug was taken (clinical-rules section 1).

    choice: the start in the past is the order's boundsPeriod.start (authoredOn is always in
    the past and says nothing about taking); any baclofen dispense handed over or
    administration in the context counts.
    """
    if order.start < req.check_time and order.start != order_authored(req, order):
        return True
    for item in req.context:
        if item.type not in {"MedicationDispense", "MedicationAdministration"}:
            continue
        status = item.resource.get("status")
        if status in {"entered-in-error", "cancelled", "declined", "not-done", "preparation"}:
            continue
        if item.type == "MedicationDispense" and not item.resource.get("whenHandedOver"):
            continue
        if _names_baclofen(req, item.resource):
            return True
    return False


def order_authored(req: CheckRequest, order: OrderFacts) -> object:
    from .fhirjson import parse_instant

    for it in req.orders:
        if it.ref == order.ref:
            return parse_instant(it.resource.get("authoredOn"), req.check_time.tzinfo)
    return None


def _names_baclofen(req: CheckRequest, resource: dict[str, object]) -> bool:
    from .dosing import is_baclofen, medication_of
    from .knowledge import load

    concept, med = medication_of(resource, req.resolve)
    return is_baclofen(concept, med, load())


@dataclass
class CheckOutcome:
    findings: list[Finding]
    notes: list[Problem] = field(default_factory=list)
    orders: list[OrderFacts] = field(default_factory=list)


def run_check(req: CheckRequest, kb: Knowledge) -> CheckOutcome:
    notes = list(req.warnings)
    orders = [
        read_order(it.resource, it.ref, req.resolve, kb, req.check_time, checked=True)
        for it in req.orders
    ]
    read_once: dict[int, OrderFacts] = {}

    def read_context(resource: JSON, ref: str) -> OrderFacts:
        """A MedicationRequest that is not checked, read once per call (it is both another
        order and, when it is baclofen, history of every checked order)."""
        facts = read_once.get(id(resource))
        if facts is None:
            facts = read_once[id(resource)] = read_order(resource, ref, req.resolve, kb,
                                                         req.check_time)
        return facts

    # only baclofen orders are read as other orders: the rules look at no other (duplicates,
    # history); other medicines are read as MedicationUses below
    others = tuple(
        read_context(it.resource, it.ref)
        for it in req.context
        if it.type == "MedicationRequest"
        and it.resource.get("status") not in {"entered-in-error"}
        and names_baclofen(it.resource, req.resolve, kb)
    )
    meds = medication_uses(req, kb)
    patient_ref = req.patient.ref if req.patient else "Patient/unknown"
    patient_json = req.patient.resource if req.patient else {}

    context_items = [(it.ref, it.resource) for it in req.context]
    # the other orders of the call that are not drafts are history too (a stopped order)
    history_items = context_items + [(it.ref, it.resource) for it in req.orders
                                     if it.resource.get("status") != "draft"]
    call_refs = frozenset(it.ref for it in req.orders)
    adult_from = frac(kb.data["patient_context"]["renal"]["cockcroft_gault"]["age_from"])

    def context_for(order: OrderFacts) -> RuleContext:
        patient = patient_facts(patient_json, patient_ref, order.start, context_items,
                                req.check_time, kb)
        egfr_only = patient.age is not None and patient.age.low_years < adult_from
        return RuleContext(
            kb=kb,
            profile=kb.profile(req.profile),
            patient=patient,
            renal=read_renal(context_items, patient, req.check_time, kb, egfr_only),
            history=build_history(history_items, order, req.resolve, kb, req.check_time,
                                  read_context, call_refs),
            check_time=req.check_time,
            orders=tuple(orders),
            others=others,
            mode=req.mode,
            hook=req.hook,
            medications=meds,
        )

    findings: list[Finding] = []
    for order in orders:
        if order.drug_unknown:
            notes.append(Problem(
                f"{order.ref}: the medicine of this order cannot be identified (no code or "
                "name, or a medicationReference that does not resolve): it was not checked",
                "not-found", None, "warning"))
    baclofen_orders = [o for o in orders if o.is_baclofen]
    for order in orders:
        if not order.is_baclofen and order.status in DOSE_STATUSES:
            findings.extend(interactions.draft_rules(context_for(order), order))
    if not baclofen_orders:
        if not findings and not any(o.drug_unknown for o in orders):
            notes.append(Problem(
                "no baclofen order to check: the orders given are for other medicines, and "
                "none of them interacts with active baclofen", "informational", None,
                "information"))
        return CheckOutcome(findings, notes, orders)
    for order in baclofen_orders:
        ctx = context_for(order)
        if order.status in DOSE_STATUSES:
            families = ORAL_FAMILIES if order.route == "oral" else INTRATHECAL_FAMILIES
        elif order.status == "stopped" or (
            order.status == "cancelled" and was_taken(req, order)
        ):
            families = STOP_FAMILIES
        elif order.status == "cancelled":
            notes.append(Problem(
                f"{order.ref}: a cancelled order that shows no sign of having been taken (no "
                "dispense, administration or start in the past) is not a stop: nothing to "
                "check", "informational", None, "information"))
            continue
        else:
            notes.append(Problem(
                f"{order.ref}: an order with status {order.status!r} is not dose-checked",
                "not-supported", None, "warning"))
            continue
        for family in families:
            findings.extend(family(ctx, order))
        findings.extend(context_rules.unavailable(ctx, order, req.unavailable))
    return CheckOutcome(findings, notes, orders)
