"""Stopping and tapering oral baclofen (clinical-rules sections 3.3 and 7)."""

from __future__ import annotations

from fractions import Fraction

from ..facts import OrderFacts
from ..findings import Finding
from ..numbers import fmt, mg_day
from . import RuleContext


def taper_length_days(order: OrderFacts) -> Fraction | None:
    """Length of a taper plan that reaches zero, or None when the order is not one.

    A plan (different sequences) whose step doses never rise, fall at least once, and whose
    last step is bounded reaches zero when that step ends; its length is the sum of the step
    durations (clinical-rules section 3.3). Every step needs a known daily dose and duration.
    """
    if not order.is_plan:
        return None
    dailies = [step.daily_mg for step in order.steps]
    durations = [step.duration_days for step in order.steps]
    if any(d is None for d in dailies) or any(d is None for d in durations):
        return None
    values = [d for d in dailies if d is not None]
    if any(b > a for a, b in zip(values, values[1:], strict=False)):
        return None
    if not any(b < a for a, b in zip(values, values[1:], strict=False)):
        return None
    return sum((d for d in durations if d is not None), Fraction(0))


def short_taper(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    length = taper_length_days(order)
    if length is None:
        return []
    spec = ctx.kb.rule("withdrawal.short-taper")
    if length < spec.num("moderate_below_days"):
        severity = "moderate"
    elif length < spec.num("low_below_days"):
        severity = "low"
    else:
        return []
    steps = " -> ".join(
        f"{mg_day(s.daily_mg or 0)} for {fmt(s.duration_days or 0)} days" for s in order.steps
    )
    return [ctx.finding(
        "withdrawal.short-taper", severity, order,
        summary=f"Baclofen taper reaches zero in {fmt(length)} days: under "
                f"{fmt(spec.num('low_below_days'))} days",
        detail=f"This taper plan ({steps}) stops baclofen after {fmt(length)} days. Stopping "
               f"over less than 1 to 2 weeks risks withdrawal (hallucinations, seizures): "
               f"taper over at least {fmt(spec.num('low_below_days'))} days.",
    )]
