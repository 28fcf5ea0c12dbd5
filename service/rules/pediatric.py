"""Children (clinical-rules section 4): off-label use, caps by age and by weight."""

from __future__ import annotations

from fractions import Fraction

from ..findings import Finding
from ..model import OrderFacts
from ..wording import fmt, mg_day
from . import RuleContext, suggest_oral
from .describe import age_text, describe_step, step_daily, step_label, worst_daily_step


def is_child(ctx: RuleContext) -> bool:
    """Below the profile's ``pediatric_age_below``, judged on the youngest possible age (a
    partial birth date makes the rule fire when any age in its range would)."""
    age = ctx.patient.age
    return age is not None and age.low_years < ctx.profile.num("pediatric_age_below")


def age_cap(ctx: RuleContext) -> tuple[Fraction, str] | None:
    """(the daily cap for the child's age, why), or None for adults and unknown ages."""
    if not is_child(ctx) or ctx.patient.age is None:
        return None
    spec = ctx.kb.rule("pediatric.age-cap")
    age = ctx.patient.age.low_years
    if age < spec.num("young_age_below"):
        return spec.num("young_cap_mg"), f"under {fmt(spec.num('young_age_below'))} years"
    below = ctx.profile.num("pediatric_mid_cap_age_below")
    young = fmt(spec.num("young_age_below"))
    return spec.num("older_cap_mg"), f"aged {young} to under {fmt(below)}"


def rules(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    out: list[Finding] = []
    if not is_child(ctx):
        return out
    if ctx.profile.name == "us":
        out.append(ctx.finding(
            "pediatric.off-label", "low", order,
            summary="Baclofen for a child under 12: safety not established in US labels",
            detail=f"The patient is a child ({age_text(ctx.patient.age, 'young')}); the safety "
                   f"and effectiveness of oral baclofen under 12 years are not established in "
                   f"US labels. Dose by weight and titrate slowly.",
        ))
    step = worst_daily_step(order)
    if step is None:
        return out
    daily, daily_text = step_daily(step)
    label = step_label(order, step)
    cap_info = age_cap(ctx)
    if cap_info is not None:
        cap, why = cap_info
        if daily > cap:
            spec = ctx.kb.rule("pediatric.age-cap")
            severity = spec.grade(over_cap_mg_day=daily - cap)
            correction = suggest_oral(ctx, cap, step.scheduled_per_day)
            example = f", for example {correction.label}" if correction else ""
            out.append(ctx.finding(
                "pediatric.age-cap", severity, order,
                summary=f"Baclofen {daily_text}{label} exceeds the {mg_day(cap)} maximum for a "
                        f"child {why}",
                detail=f"Ordered {daily_text} ({describe_step(step)}){label}; the maximum for a "
                       f"child {why} ({age_text(ctx.patient.age, 'young')}) is {mg_day(cap)}. "
                       f"Reduce to at most {mg_day(cap)}{example}.",
                correction=correction,
                daily_mg=daily, limit=cap,
            ))
    weight = ctx.patient.weight_kg
    if weight is None or weight <= 0:
        days = fmt(ctx.kb.typed.patient_context.weight.child_max_age_days)
        out.append(ctx.finding(
            "pediatric.weight-unknown", "low", order,
            summary="No recent weight for this child: the mg/kg dose checks could not run",
            detail=f"The patient is a child ({age_text(ctx.patient.age, 'young')}) with no "
                   f"usable weight within {days} days, so {daily_text}{label} could not be "
                   f"checked against the maximum of "
                   f"{fmt(ctx.kb.rule('pediatric.weight-cap').num('cap_mg_kg'))} mg/kg/day "
                   f"or the usual start by weight. Record a current weight.",
        ))
    else:
        spec = ctx.kb.rule("pediatric.weight-cap")
        per_kg = daily / weight
        cap_kg = spec.num("cap_mg_kg")
        if per_kg > cap_kg:
            severity = spec.grade(mg_kg_day=per_kg)
            cap = cap_kg * weight
            correction = suggest_oral(ctx, cap, step.scheduled_per_day)
            example = f", for example {correction.label}" if correction else ""
            evidence = (ctx.patient.weight_ref,) if ctx.patient.weight_ref else ()
            out.append(ctx.finding(
                "pediatric.weight-cap", severity, order,
                summary=f"Baclofen {fmt(per_kg)} mg/kg/day{label} exceeds {fmt(cap_kg)} mg/kg/day",
                detail=f"Ordered {daily_text}{label} = {fmt(per_kg)} mg/kg/day for a weight of "
                       f"{fmt(weight)} kg; the maximum for a child is {fmt(cap_kg)} mg/kg/day "
                       f"({mg_day(cap)}). Reduce to at most {mg_day(cap)}{example}.",
                evidence=evidence,
                correction=correction,
                daily_mg=daily, limit=cap_kg, limit_unit="mg/kg/day",
            ))
    return out
