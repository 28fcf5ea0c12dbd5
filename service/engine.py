"""The checker on one screen: request -> facts -> findings.

``run_check`` builds the call's facts once (service/facts/build.py) and runs the rules over
them; ``run_rules`` only chooses the rule families for each checked order and runs them. Both
are pure: everything they need (the check time included) is in the request, and they return
findings plus notes about what could not be checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import Problem
from .facts.build import build_facts
from .facts.source import CallInput
from .findings import Finding
from .knowledge import Knowledge
from .model import CallFacts, OrderFacts
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


@dataclass
class CheckOutcome:
    findings: list[Finding]
    notes: list[Problem] = field(default_factory=list)
    orders: list[OrderFacts] = field(default_factory=list)


def run_check(req: CallInput, kb: Knowledge) -> CheckOutcome:
    """Build the call's facts, then run the rules over them."""
    return run_rules(build_facts(req, kb), kb)


def run_rules(facts: CallFacts, kb: Knowledge) -> CheckOutcome:
    notes = list(facts.warnings)
    orders = list(facts.orders)

    def context_for(i: int) -> RuleContext:
        known = facts.contexts[i]
        return RuleContext(
            kb=kb,
            profile=kb.profile(facts.profile),
            patient=known.patient,
            renal=known.renal,
            history=known.history,
            check_time=facts.check_time,
            orders=facts.orders,
            others=facts.others,
            mode=facts.mode,
            hook=facts.hook,
            medications=facts.medications,
        )

    findings: list[Finding] = []
    for order in orders:
        if order.drug_unknown:
            notes.append(Problem(
                f"{order.ref}: the medicine of this order cannot be identified (no code or "
                "name, or a medicationReference that does not resolve): it was not checked",
                "not-found", None, "warning"))
    for i, order in enumerate(orders):
        if not order.is_baclofen and order.status in DOSE_STATUSES:
            findings.extend(interactions.draft_rules(context_for(i), order))
    if not any(o.is_baclofen for o in orders):
        if not findings and not any(o.drug_unknown for o in orders):
            notes.append(Problem(
                "no baclofen order to check: the orders given are for other medicines, and "
                "none of them interacts with active baclofen", "informational", None,
                "information"))
        return CheckOutcome(findings, notes, orders)
    for i, order in enumerate(orders):
        if not order.is_baclofen:
            continue
        ctx = context_for(i)
        if order.status in DOSE_STATUSES:
            families = ORAL_FAMILIES if order.route == "oral" else INTRATHECAL_FAMILIES
        elif order.status == "stopped" or (
            order.status == "cancelled" and facts.contexts[i].shows_taken
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
        findings.extend(context_rules.unavailable(ctx, order, facts.unavailable))
    return CheckOutcome(findings, notes, orders)
