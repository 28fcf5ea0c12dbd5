"""Stopping and tapering oral baclofen (clinical-rules sections 3.3 and 7)."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction

from ..clinical.therapy import level_at, time_on_therapy
from ..clinical.time import elapsed_days
from ..findings import Finding
from ..model import MedicationHistory, OrderFacts, Regimen
from ..wording import fmt, mg_day, micrograms
from . import RuleContext
from .intrathecal import maintenance_ug_day, mg_unit_rule


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
    if length >= spec.num("low_below_days"):
        return []
    severity = spec.grade(taper_days=length)
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


# --- stops and cuts (section 7) and the intrathecal counterparts (section 6) -------------

def _history(ctx: RuleContext) -> MedicationHistory | None:
    hist = ctx.history
    return hist if isinstance(hist, MedicationHistory) else None


def _remaining(ctx: RuleContext, order: OrderFacts, hist: MedicationHistory | None
               ) -> list[tuple[OrderFacts, bool]]:
    """Baclofen of the same route that goes on after ``order`` stops, each with whether it is
    new in this call (a draft): other orders of this call that are not stopped, and other
    orders still active at the check time.

    choice: only MedicationRequests count as going on. An active MedicationStatement or a
    recent dispense most often describes the very therapy being stopped, so counting it would
    hide an abrupt stop.
    """
    out = [(o, o.status == "draft") for o in ctx.orders
           if o.ref != order.ref and o.is_baclofen and o.route == order.route
           and o.status in {"draft", "active", "on-hold"}]
    seen = {o.ref for o, _ in out}
    if hist is not None:
        out += [(r.order, False) for r in hist.regimens
                if r.route == order.route and r.ref != order.ref and r.ref not in seen
                and r.source == "MedicationRequest" and r.ref not in order.prior_refs
                and r.active_at(ctx.check_time)]
    return out


def _scheduled(order: OrderFacts) -> tuple[Fraction, str]:
    """The scheduled daily dose of an order that stays, as counted for a stop (section 7):
    as-needed lines count as zero (the patient may not take them), and so does a dose that
    cannot be read; the text says so."""
    step = order.first_step
    if step is None:
        return Fraction(0), f"{order.ref} (dose unknown: counted as zero)"
    scheduled = [ln for ln in step.lines if ln.scheduled]
    if not scheduled:
        return Fraction(0), f"{order.ref} (as needed: counted as zero)"
    daily = step.scheduled_daily_mg
    if daily is None:
        return Fraction(0), f"{order.ref} (dose cannot be read: counted as zero)"
    return daily, f"{order.ref} ({mg_day(daily)})"


def _exposure(ctx: RuleContext, order: OrderFacts, hist: MedicationHistory | None,
              until: datetime, include_order: bool) -> tuple[Fraction | None, str]:
    """(days on therapy or None when unknown, how it was found)."""
    regimens: list[Regimen] = list(hist.regimens) if hist else []
    if include_order:
        regimens.append(Regimen(ref=order.ref, source="MedicationRequest", status="active",
                                route=order.route, start=order.start, end=None,
                                end_basis="the stop", order=order))
    therapy = time_on_therapy(regimens, order.route, until, ctx.kb)
    if therapy is None:
        return Fraction(0), "no exposure found"
    if therapy.days is None or therapy.start is None:
        return None, "a regimen in the exposure has no known start"
    return therapy.days, f"since {therapy.start.date().isoformat()}"


def stop_rules(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    """A stopped (or taken, then cancelled) order: is baclofen stopped abruptly?"""
    hist = _history(ctx)
    remaining = _remaining(ctx, order, hist)
    if remaining and order.route == "intrathecal":
        return []
    if remaining:
        return _stop_as_cut(ctx, order, hist, remaining)
    if order.route == "intrathecal":
        daily_ug = maintenance_ug_day(order)
        amount = f" ({micrograms(daily_ug)} a day)" if daily_ug else ""
        return [ctx.finding(
            "intrathecal.abrupt-stop", ctx.kb.rule("intrathecal.abrupt-stop").grade(
                stopped=True), order,
            summary="Intrathecal baclofen stopped abruptly: risk of life-threatening withdrawal",
            detail=f"This stops intrathecal baclofen{amount}. Abrupt discontinuation can cause "
                   f"high fever, altered mental state, rebound spasticity and muscle rigidity, "
                   f"rhabdomyolysis and death: reduce the dose gradually and have oral "
                   f"baclofen and close monitoring in place.",
            evidence=tuple(r.ref for r in (hist.regimens if hist else ())
                           if r.route == "intrathecal"),
        )]
    spec = ctx.kb.rule("withdrawal.abrupt")
    days, how = _exposure(ctx, order, hist, ctx.check_time, include_order=True)
    if days is not None and days < spec.num("min_days_on_therapy"):
        return []
    daily = order.first_step.daily_mg if order.first_step else None
    if daily is None and hist is not None and hist.current is not None:
        daily = hist.current.daily_mg
    severity = spec.grade(regimen_daily_mg=daily)
    dose = f" of {mg_day(daily)}" if daily is not None else " (dose unknown)"
    exposure = (f"{fmt(days)} days on therapy ({how})" if days is not None
                else f"time on therapy unknown ({how})")
    return [ctx.finding(
        "withdrawal.abrupt", severity, order,
        summary=f"Baclofen{dose} stopped without a taper after "
                f"{fmt(days) + ' days' if days is not None else 'an unknown time'}",
        detail=f"This stops oral baclofen{dose} with no taper, after {exposure}. Abrupt "
               f"withdrawal can cause hallucinations and seizures: taper over 1 to 2 weeks "
               f"instead.",
        evidence=tuple(r.ref for r in (hist.regimens if hist else ()) if r.route == "oral"),
    )]


def _stop_as_cut(ctx: RuleContext, order: OrderFacts, hist: MedicationHistory | None,
                 remaining: list[tuple[OrderFacts, bool]]) -> list[Finding]:
    """An oral stop while other oral orders stay or are new in the call is judged as a cut
    (clinical-rules section 7): before = the stopped order's daily dose plus the scheduled
    daily doses of the other active orders; after = the scheduled daily doses of the orders
    that remain or are new."""
    stopped = order.first_step.daily_mg if order.first_step else None
    if stopped is None and hist is not None and hist.current is not None:
        stopped = hist.current.daily_mg
    if stopped is None or stopped <= 0:
        return []
    active = [_scheduled(o) for o, new in remaining if not new]
    new = [_scheduled(o) for o, is_new in remaining if is_new]
    before = stopped + sum((v for v, _ in active), Fraction(0))
    after = sum((v for v, _ in active + new), Fraction(0))
    judged = _sharp_cut(ctx, order, hist, before, after, ctx.check_time, True)
    if judged is None:
        return []
    severity, exposure = judged
    stays = "; ".join(t for _, t in active + new)
    refs = tuple(o.ref for o, _ in remaining)
    return [ctx.finding(
        "withdrawal.abrupt", severity, order,
        summary=f"Baclofen stop cuts the scheduled dose from {mg_day(before)} to "
                f"{mg_day(after)} in one step",
        detail=f"This stops oral baclofen ({mg_day(stopped)}) while other baclofen orders "
               f"stay or are new: {stays}. The scheduled daily dose falls from "
               f"{mg_day(before)} to {mg_day(after)} in one step, to less than half, after "
               f"{exposure}. Abrupt withdrawal can cause hallucinations and seizures: reduce "
               f"gradually over 1 to 2 weeks.",
        implicated=refs,
        evidence=tuple(dict.fromkeys(refs + tuple(
            r.ref for r in (hist.regimens if hist else ()) if r.route == "oral"))),
    )]


def _sharp_cut(ctx: RuleContext, order: OrderFacts, hist: MedicationHistory | None,
               before: Fraction, after: Fraction, until: datetime, include_order: bool
               ) -> tuple[str, str] | None:
    """(severity, exposure text) of a cut below ``cut_fraction`` of the daily dose after
    ``min_days_on_therapy`` or more (or an unknown time), or None when withdrawal.abrupt
    does not fire (``rules.withdrawal.abrupt``)."""
    spec = ctx.kb.rule("withdrawal.abrupt")
    if not after < before * spec.num("cut_fraction"):
        return None
    days, how = _exposure(ctx, order, hist, until, include_order)
    if days is not None and days < spec.num("min_days_on_therapy"):
        return None
    severity = spec.grade(regimen_daily_mg=before)
    return severity, (f"{fmt(days)} days on therapy ({how})" if days is not None
                      else f"time on therapy unknown ({how})")


def cut_rules(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    """A new order that cuts the current regimen sharply in one step."""
    hist = _history(ctx)
    if ctx.mode == "review" or hist is None:
        return []
    current = hist.current_intrathecal if order.route == "intrathecal" else hist.current
    first = order.first_step
    if current is None or first is None or first.daily_mg is None:
        return []
    if order.route == "oral" and any(o.ref == current.ref and o.status == "stopped"
                                     for o in ctx.orders):
        # the stop of this call is judged as a cut against everything that remains or is
        # new (section 7): that one finding covers this order too
        return []
    level = level_at(current, order.start)
    before = level.daily_mg
    if before is None or before <= 0:
        return []
    after = first.daily_mg
    if order.route == "intrathecal":
        spec = ctx.kb.rule("intrathecal.abrupt-stop")
        cut = (before - after) / before
        if cut <= spec.num("max_cut_fraction"):
            return []
        return [ctx.finding(
            "intrathecal.abrupt-stop", spec.grade(stopped=False), order,
            summary=f"Intrathecal baclofen cut by {fmt(cut * 100)}% in one step",
            detail=f"This lowers intrathecal baclofen from {micrograms(before * 1000)} to "
                   f"{micrograms(after * 1000)} a day ({current.ref}), a cut of "
                   f"{fmt(cut * 100)}% in one step (more than "
                   f"{fmt(spec.num('max_cut_fraction') * 100)}%): reduce gradually to avoid "
                   f"withdrawal.",
            implicated=(current.ref,), evidence=(current.ref,),
        )]
    judged = _sharp_cut(ctx, order, hist, before, after, order.start, False)
    if judged is None:
        return []
    severity, exposure = judged
    return [ctx.finding(
        "withdrawal.abrupt", severity, order,
        summary=f"Baclofen cut from {mg_day(before)} to {mg_day(after)} in one step",
        detail=f"This cuts oral baclofen from {mg_day(before)} ({current.ref}) to "
               f"{mg_day(after)} in one step, to less than half, after {exposure}. Reduce "
               f"gradually over 1 to 2 weeks to avoid withdrawal.",
        implicated=(current.ref,), evidence=(current.ref,),
    )]


def it_titration(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    """Intrathecal maintenance raised by more than ``max_increase_fraction``, or less than
    ``min_hours`` after the current intrathecal regimen started
    (``rules.intrathecal.titration``)."""
    hist = _history(ctx)
    if ctx.mode == "review" or hist is None or hist.current_intrathecal is None:
        return []
    current = hist.current_intrathecal
    before_ug = maintenance_ug_day(current.order)
    after_ug = maintenance_ug_day(order)
    if before_ug is None or after_ug is None or before_ug <= 0 or after_ug <= before_ug:
        return []
    spec = ctx.kb.rule("intrathecal.titration")
    rise = (after_ug - before_ug) / before_ug
    reasons = []
    if rise > spec.num("max_increase_fraction"):
        reasons.append(f"by {fmt(rise * 100)}% (more than "
                       f"{fmt(spec.num('max_increase_fraction') * 100)}%)")
    if current.start is not None:
        hours = elapsed_days(current.start, order.start) * 24
        if hours < spec.num("min_hours"):
            reasons.append(f"{fmt(hours)} hours after the current dose started (less than "
                           f"{fmt(spec.num('min_hours'))} hours)")
    if not reasons:
        return []
    return [ctx.finding(
        "intrathecal.titration", "moderate", order,
        summary=f"Intrathecal baclofen raised from {micrograms(before_ug)} to "
                f"{micrograms(after_ug)} a day too fast",
        detail=f"This raises intrathecal baclofen from {micrograms(before_ug)} to "
               f"{micrograms(after_ug)} a day ({current.ref}) {' and '.join(reasons)}. "
               f"Titrate once every 24 hours by 10 to 30%.",
        implicated=(current.ref,), evidence=(current.ref,),
    )]


def it_changes(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    """Intrathecal cuts and raises against the current intrathecal regimen; not run when the
    dose is a probable mg/micrograms error (intrathecal.mg-unit high)."""
    mg_unit = mg_unit_rule(ctx, order)
    if mg_unit is not None and mg_unit.severity == "high":
        return []
    return cut_rules(ctx, order) + it_titration(ctx, order)
