"""The checker on one screen: request -> facts -> findings.

``run_check`` is pure: everything it needs (the check time included) is in the CheckRequest,
and it returns findings plus notes about what could not be checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .dosing import read_order
from .errors import Problem
from .facts import OrderFacts
from .fhir_input.request import CheckRequest
from .findings import Finding
from .knowledge import Knowledge
from .medications import medication_uses, pregnancy
from .patient import patient_facts
from .rules import (
    RuleContext,
    interactions,
    intrathecal,
    oral,
    order_quality,
    pediatric,
    withdrawal,
)

Family = Callable[[RuleContext, OrderFacts], list[Finding]]

# Which rule families run on which order (clinical-rules section 1: intrathecal orders get
# sections 6, 8 and pregnancy only).
ORAL_FAMILIES: tuple[Family, ...] = (
    order_quality.rules, oral.rules, pediatric.rules, intrathecal.with_oral_rule,
    interactions.rules, interactions.pregnancy_rule, withdrawal.short_taper,
)
INTRATHECAL_FAMILIES: tuple[Family, ...] = (
    order_quality.rules, intrathecal.rules, interactions.rules, interactions.pregnancy_rule,
)
STOP_FAMILIES: tuple[Family, ...] = ()
DOSE_STATUSES = frozenset({"draft", "active", "on-hold"})


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
    others = tuple(
        read_order(it.resource, it.ref, req.resolve, kb, req.check_time)
        for it in req.context
        if it.type == "MedicationRequest"
        and it.resource.get("status") not in {"entered-in-error"}
    )
    meds = medication_uses(req, kb)
    pregnant = pregnancy(req, kb)
    patient_ref = req.patient.ref if req.patient else "Patient/unknown"
    patient_json = req.patient.resource if req.patient else {}

    def context_for(order: OrderFacts) -> RuleContext:
        return RuleContext(
            kb=kb,
            profile=kb.profile(req.profile),
            patient=patient_facts(patient_json, patient_ref, order.start),
            check_time=req.check_time,
            orders=tuple(orders),
            others=others,
            mode=req.mode,
            hook=req.hook,
            medications=meds,
            pregnancy=pregnant,
        )

    findings: list[Finding] = []
    baclofen_orders = [o for o in orders if o.is_baclofen]
    for order in orders:
        if not order.is_baclofen and order.status in DOSE_STATUSES:
            findings.extend(interactions.draft_rules(context_for(order), order))
    if not baclofen_orders:
        if not findings:
            notes.append(Problem(
                "no baclofen order to check: the orders given are for other medicines, and "
                "none of them interacts with active baclofen", "informational", None,
                "information"))
        return CheckOutcome(findings, notes, orders)
    for order in baclofen_orders:
        ctx = context_for(order)
        if order.status in DOSE_STATUSES:
            families = ORAL_FAMILIES if order.route == "oral" else INTRATHECAL_FAMILIES
        elif order.status in {"stopped", "cancelled"} and STOP_FAMILIES:
            families = STOP_FAMILIES
        else:
            notes.append(Problem(
                f"{order.ref}: an order with status {order.status!r} is not dose-checked",
                "not-supported", None, "warning"))
            continue
        for family in families:
            findings.extend(family(ctx, order))
    return CheckOutcome(findings, notes, orders)
