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
from .patient import patient_facts
from .rules import RuleContext, oral, order_quality

Family = Callable[[RuleContext, OrderFacts], list[Finding]]

ORAL_FAMILIES: tuple[Family, ...] = (order_quality.rules, oral.rules)
INTRATHECAL_FAMILIES: tuple[Family, ...] = ()
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
    findings: list[Finding] = []
    baclofen_orders = [o for o in orders if o.is_baclofen]
    if not baclofen_orders:
        notes.append(Problem(
            "no baclofen order to check: the orders given are for other medicines",
            "informational", None, "information"))
        return CheckOutcome(findings, notes, orders)
    patient_ref = req.patient.ref if req.patient else "Patient/unknown"
    patient_json = req.patient.resource if req.patient else {}
    for order in baclofen_orders:
        ctx = RuleContext(
            kb=kb,
            profile=kb.profile(req.profile),
            patient=patient_facts(patient_json, patient_ref, order.start),
            check_time=req.check_time,
            orders=tuple(orders),
            others=others,
            mode=req.mode,
            hook=req.hook,
        )
        if order.status not in DOSE_STATUSES:
            notes.append(Problem(
                f"{order.ref}: an order with status {order.status!r} is not dose-checked; "
                "checks of stopped orders (withdrawal) are not available in this version",
                "not-supported", None, "warning"))
            continue
        families = ORAL_FAMILIES if order.route == "oral" else INTRATHECAL_FAMILIES
        if order.route == "intrathecal" and not families:
            notes.append(Problem(
                f"{order.ref}: intrathecal baclofen checks are not available in this version; "
                "the order was not checked", "not-supported", None, "warning"))
        for family in families:
            findings.extend(family(ctx, order))
    return CheckOutcome(findings, notes, orders)
