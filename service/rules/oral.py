"""Oral dose ceilings, frequency and duplicate orders (clinical-rules section 3)."""

from __future__ import annotations

from datetime import datetime, timedelta
from fractions import Fraction

from ..findings import Finding
from ..model import OrderFacts
from ..wording import fmt, fmt_beside, mg, mg_day, times_per_day
from . import RuleContext, suggest_oral
from .describe import describe_step, step_daily, step_label, worst_daily_step, worst_single


def rules(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    out: list[Finding] = []
    for rule in (max_daily, max_single, probable_error, frequency, duplicate):
        found = rule(ctx, order)
        if found is not None:
            out.append(found)
    return out


def max_daily(ctx: RuleContext, order: OrderFacts) -> Finding | None:
    step = worst_daily_step(order)
    if step is None:
        return None
    cap = ctx.profile.num("max_daily_mg")
    daily, daily_text = step_daily(step, beside=cap)
    if daily <= cap:
        return None
    severity = ctx.kb.rule("oral.max-daily").grade(ctx.profile, daily_mg=daily)
    correction = suggest_oral(ctx, cap, step.scheduled_per_day)
    todo = f" Reduce to at most {mg_day(cap)}"
    todo += f", for example {correction.label}." if correction else "."
    return ctx.finding(
        "oral.max-daily", severity, order,
        summary=f"Baclofen {daily_text}{step_label(order, step)} exceeds the "
                f"{mg_day(cap)} maximum",
        detail=f"Ordered {daily_text} ({describe_step(step)}){step_label(order, step)}, above "
               f"the maximum oral dose of {mg_day(cap)} ({ctx.profile.label}).{todo}",
        correction=correction,
        daily_mg=daily, limit=cap,
    )


def max_single(ctx: RuleContext, order: OrderFacts) -> Finding | None:
    worst = worst_single(order)
    if worst is None:
        return None
    dose, step = worst
    cap = ctx.profile.num("max_single_mg")
    if dose <= cap:
        return None
    daily = step.daily_mg
    dose_text = f"{fmt_beside(dose, cap)} mg"
    correction = suggest_oral(ctx, daily, None) if daily else None
    todo = f" Give at most {mg(cap)} per dose"
    usual = ctx.kb.typed.dosing.usual_doses_per_day
    most_doses = max(usual)
    if correction and correction.dose_mg * correction.per_day == daily:
        todo += f", for example {correction.label}."
    elif daily is not None and daily <= cap * most_doses:
        todo += (f", dividing the daily dose into {' or '.join(fmt(n) for n in usual)} "
                 "doses.")
        correction = None
    else:
        # the daily dose cannot be divided into doses within the limit: do not suggest it
        todo += "."
        correction = None
    return ctx.finding(
        "oral.max-single", "moderate", order,
        summary=f"Single baclofen dose of {dose_text}{step_label(order, step)} exceeds the "
                f"{mg(cap)} maximum",
        detail=f"One dose of {dose_text}{step_label(order, step)} is above the maximum single "
               f"oral dose of {mg(cap)} ({ctx.profile.label}).{todo}",
        correction=correction,
        daily_mg=daily, dose_mg=dose, limit=cap, limit_unit="mg",
    )


def probable_error(ctx: RuleContext, order: OrderFacts) -> Finding | None:
    spec = ctx.kb.rule("oral.probable-error")
    single_limit, daily_limit = spec.num("single_mg"), spec.num("daily_mg")
    worst = worst_single(order)
    step = worst_daily_step(order)
    reasons = []
    if worst is not None and worst[0] >= single_limit:
        reasons.append(f"one dose of {mg(worst[0])} ({mg(single_limit)} or more)")
    if step is not None and step.known_daily_mg >= daily_limit:
        daily_text = step_daily(step)[1]
        reasons.append(f"{daily_text} ({mg_day(daily_limit)} or more)")
    if not reasons:
        return None
    key = worst[0] if worst and worst[0] >= single_limit else None
    summary_number = mg(key) if key is not None else step_daily(step)[1] if step else ""
    return ctx.finding(
        "oral.probable-error", "high", order,
        summary=f"Baclofen {summary_number} is in the overdose range: probable entry error",
        detail=f"This order gives {' and '.join(reasons)}, which is in the overdose range "
               f"(coma and seizures reported from {mg(daily_limit)}). Confirm the intended "
               f"dose before signing; this is probably an entry error.",
    )


def frequency(ctx: RuleContext, order: OrderFacts) -> Finding | None:
    spec = ctx.kb.rule("oral.frequency")
    daily_from = spec.num("daily_mg_from")
    min_per_day, max_per_day = spec.num("min_per_day"), spec.num("max_per_day")
    for step in order.steps:
        per_day = step.scheduled_per_day
        daily = step.scheduled_daily_mg
        if per_day is None or daily is None:
            continue
        label = step_label(order, step)
        if daily >= daily_from and per_day < min_per_day:
            correction = suggest_oral(ctx, daily, min_per_day)
            fix = (f" Consider {correction.label}."
                   if correction and correction.dose_mg * correction.per_day == daily
                   else f" Divide it into {fmt(min_per_day)} to {fmt(max_per_day)} doses.")
            if not fix.startswith(" Consider"):
                correction = None
            return ctx.finding(
                "oral.frequency", "low", order,
                summary=f"Baclofen {mg_day(daily)} in {fmt(per_day)} dose(s) a day{label}: "
                        f"usually divided {fmt(min_per_day)}-{fmt(max_per_day)} times a day",
                detail=f"{mg_day(daily)} is given {times_per_day(per_day)}{label}; baclofen is "
                       f"short-acting and doses of {mg_day(daily_from)} or more are usually "
                       f"divided into {fmt(min_per_day)} to {fmt(max_per_day)} doses a day."
                       f"{fix}",
                correction=correction,
            )
        if per_day > max_per_day:
            return ctx.finding(
                "oral.frequency", "low", order,
                summary=f"Baclofen scheduled {fmt(per_day)} times a day{label}: more than "
                        f"{fmt(max_per_day)}",
                detail=f"The order schedules {fmt(per_day)} administrations a day{label} "
                       f"({describe_step(step)}); more than {fmt(max_per_day)} scheduled doses "
                       f"a day is unusual. Check the schedule.",
            )
    return None


def duplicate(ctx: RuleContext, order: OrderFacts) -> Finding | None:
    """Another oral baclofen order active at the same time that this order does not replace.

    choice: other orders of the same call count (they will be active once signed), as do
    context MedicationRequests with status active, on-hold or draft whose bounds have not ended
    before this order starts. A stopped order of the same call is being replaced.
    choice: an order bounded only by durations (boundsDuration on every step) ends that long
    after its start, like one bounded by boundsPeriod.end.
    """
    stopped_in_call = {o.ref for o in ctx.orders if o.status == "stopped"}
    dupes: list[OrderFacts] = []
    for other in ctx.orders + ctx.others:
        if other.ref == order.ref or not other.is_baclofen or other.route != "oral":
            continue
        if other.ref in order.prior_refs or order.ref in other.prior_refs:
            continue
        if other.ref in stopped_in_call:
            continue
        if other.status not in {"active", "on-hold", "draft"}:
            continue
        end = other.end or _end_by_duration(other)
        if end is not None and end <= order.start:
            continue
        if order.end is not None and other.start >= order.end:
            continue
        dupes.append(other)
    if not dupes:
        return None
    own = order.first_step.daily_mg if order.first_step else None
    totals = [own] + [o.first_step.daily_mg if o.first_step else None for o in dupes]
    known = [t for t in totals if t is not None]
    combined = sum(known, Fraction(0))
    combined_text = mg_day(combined)
    if len(known) != len(totals):
        combined_text = f"at least {combined_text}"
    others_text = ", ".join(
        f"{o.ref} ({mg_day(o.first_step.daily_mg)})"
        if o.first_step and o.first_step.daily_mg is not None else o.ref
        for o in dupes
    )
    return ctx.finding(
        "oral.duplicate", "moderate", order,
        summary=f"Another baclofen order is active: combined {combined_text}",
        detail=f"Another oral baclofen order is active at the same time: {others_text}; "
               f"together with this order the patient would receive {combined_text}. Stop the "
               f"other order, or mark this order as replacing it.",
        implicated=tuple(o.ref for o in dupes),
        evidence=tuple(o.ref for o in dupes),
    )


def _end_by_duration(order: OrderFacts) -> datetime | None:
    durations = [step.duration_days for step in order.steps]
    if not durations or any(d is None for d in durations):
        return None
    total = sum((d for d in durations if d is not None), Fraction(0))
    return order.start + timedelta(seconds=float(total * 86400))
