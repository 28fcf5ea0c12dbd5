"""Intrathecal baclofen (clinical-rules section 6): doses in micrograms."""

from __future__ import annotations

from fractions import Fraction

from ..findings import Correction, Finding
from ..model import DoseLine, OrderFacts
from ..wording import fmt, micrograms
from . import RuleContext

UG_PER_MG = 1000


def is_bolus(line: DoseLine) -> bool:
    """Given once: repeat.count 1 whatever frequency fields come with it (clinical-rules
    section 6), no repeating timing, or labelled bolus/screening."""
    if line.rate_mg_day is not None:
        return False
    return line.single or line.count_one or line.bolus_label or line.per_day is None


def maintenance_ug_day(order: OrderFacts) -> Fraction | None:
    """Daily maintenance amount: repeating doses and rates (per hour -> per day)."""
    total = Fraction(0)
    found = False
    for line in order.lines:
        if is_bolus(line):
            continue
        daily = line.daily_mg
        if daily is None:
            return None
        total += daily * UG_PER_MG
        found = True
    return total if found else None


def rules(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    out: list[Finding] = []
    mg_unit = mg_unit_rule(ctx, order)
    if mg_unit is not None:
        out.append(mg_unit)
        if mg_unit.severity == "high":
            return out + age_rule(ctx, order)
    out += bolus_rule(ctx, order)
    out += max_daily_rule(ctx, order)
    out += age_rule(ctx, order)
    out += with_oral_rule(ctx, order)
    return out


def mg_unit_rule(ctx: RuleContext, order: OrderFacts) -> Finding | None:
    mg_lines = [ln for ln in order.lines if ln.written_unit in {"mg", "g"}]
    if not mg_lines:
        return None
    spec = ctx.kb.rule("intrathecal.mg-unit")
    total_mg = sum(
        ((ln.daily_mg if ln.daily_mg is not None else ln.dose_mg) or Fraction(0))
        for ln in mg_lines
    )
    written = ", ".join(ln.written for ln in mg_lines)
    if spec.grade(daily_mg=total_mg) == "high":
        return ctx.finding(
            "intrathecal.mg-unit", "high", order,
            summary=f"Intrathecal baclofen written as {written}: probable 1000-fold error",
            detail=f"This intrathecal dose is written in mg ({written}, {fmt(total_mg)} mg a "
                   f"day = {micrograms(total_mg * UG_PER_MG)}), far above any intrathecal dose; "
                   f"intrathecal doses are written in micrograms. Confirm the intended dose; "
                   f"this is probably a mg/micrograms mix-up.",
        )
    line = mg_lines[0]
    correction = None
    if len(order.lines) == 1 and line.dose_mg is not None:
        correction = Correction(
            dose_mg=line.dose_mg * UG_PER_MG, per_day=line.per_day or Fraction(1),
            label=f"{micrograms(line.dose_mg * UG_PER_MG)} (the same dose in micrograms)",
            unit="ug",
        )
    return ctx.finding(
        "intrathecal.mg-unit", "low", order,
        summary=f"Intrathecal dose written in mg ({written}): write it in micrograms",
        detail=f"This intrathecal dose is written in mg ({written} = "
               f"{micrograms(total_mg * UG_PER_MG)} a day). Intrathecal baclofen is dosed in "
               f"micrograms: re-express the order in micrograms.",
        correction=correction,
    )


def bolus_rule(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    spec = ctx.kb.rule("intrathecal.bolus")
    limit = spec.num("max_ug")
    boluses = [ln for ln in order.lines if is_bolus(ln) and ln.dose_mg is not None]
    worst = max(boluses, key=lambda ln: ln.dose_mg or 0, default=None)
    if worst is None or worst.dose_mg is None or worst.dose_mg * UG_PER_MG <= limit:
        return []
    dose = worst.dose_mg * UG_PER_MG
    return [ctx.finding(
        "intrathecal.bolus", "high", order,
        summary=f"Intrathecal bolus of {micrograms(dose)} exceeds the {micrograms(limit)} "
                f"screening maximum",
        detail=f"An intrathecal bolus of {micrograms(dose)} is above the largest screening "
               f"dose of {micrograms(limit)} (screening uses 50, 75 or 100 micrograms). "
               f"Confirm the dose.",
        correction=Correction(limit, Fraction(1), f"{micrograms(limit)} once", unit="ug"),
        dose_mg=worst.dose_mg, limit=limit, limit_unit="ug",
    )]


def max_daily_rule(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    spec = ctx.kb.rule("intrathecal.max-daily")
    daily = maintenance_ug_day(order)
    cap = spec.num("max_ug_day")
    if daily is None or daily <= cap:
        return []
    severity = spec.grade(daily_ug=daily)
    return [ctx.finding(
        "intrathecal.max-daily", severity, order,
        summary=f"Intrathecal baclofen {micrograms(daily)}/day exceeds {micrograms(cap)}/day",
        detail=f"The intrathecal maintenance dose is {micrograms(daily)} a day, above the usual "
               f"maximum of {micrograms(cap)} a day (maintenance is usually 300 to 800 "
               f"micrograms a day). Confirm the dose and the pump programming.",
        daily_mg=daily / UG_PER_MG, limit=cap, limit_unit="ug/day",
    )]


def age_rule(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    spec = ctx.kb.rule("intrathecal.age")
    age = ctx.patient.age
    limit = spec.num("age_below")
    if age is None or age.low_years >= limit:
        return []
    return [ctx.finding(
        "intrathecal.age", "moderate", order,
        summary=f"Intrathecal baclofen for a child under {fmt(limit)} years",
        detail=f"The patient is {fmt(age.low_years)} years old; intrathecal baclofen is not "
               f"established under {fmt(limit)} years. Confirm with the specialist team.",
    )]


def with_oral_rule(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    """Oral and intrathecal baclofen active together (fires on either order checked)."""
    other_route = "oral" if order.route == "intrathecal" else "intrathecal"
    others = [u for u in ctx.medications
              if u.baclofen and u.route == other_route and u.ref != order.ref]
    if not others:
        return []
    names = ", ".join(f"{u.name} ({u.ref})" for u in others)
    return [ctx.finding(
        "intrathecal.with-oral", "low", order,
        summary="Oral and intrathecal baclofen are active together",
        detail=f"{other_route.capitalize()} baclofen is also active: {names}. Using both adds "
               f"their effects; confirm that both are intended.",
        implicated=tuple(u.ref for u in others),
        evidence=tuple(u.ref for u in others),
    )]
