"""Starting and raising oral doses (clinical-rules section 3): oral.start-dose,
oral.titration-interval, oral.titration-step.

New therapy (no current regimen) gets ``oral.start-dose`` on the first step only; an order
that follows a current regimen is compared with the daily dose in effect when it starts. Each
later step of a plan is compared with the step before, the interval being that step's
duration. A review of an active order, and a stop, get none of these rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..clinical.therapy import level_at, same_dose_since
from ..clinical.time import elapsed_days
from ..findings import SEVERITY_RANK, Finding
from ..model import MedicationHistory, OrderFacts, RenalFacts
from ..wording import fmt, mg_day
from . import RuleContext
from .describe import describe_step, step_daily
from .pediatric import is_child
from .renal import older

STOP_STATUSES = frozenset({"stopped", "cancelled", "completed", "entered-in-error"})


def rules(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    history = ctx.history
    if (order.route != "oral" or ctx.mode == "review" or order.status in STOP_STATUSES
            or not isinstance(history, MedicationHistory) or not order.steps):
        return []
    out: list[Finding] = []
    if history.current is None:
        found = start_dose(ctx, order)
        if found is not None:
            out.append(found)
    unknown = titration_unknown(ctx, order, history)
    if unknown is not None:
        out.append(unknown)
    increases = _increases(ctx, order, history)
    for rule in (interval_rule, step_rule):
        found = rule(ctx, order, increases)
        if found is not None:
            out.append(found)
    return out


# --- who is vulnerable ------------------------------------------------------------------

def renal_below(ctx: RuleContext, limit: Fraction) -> bool:
    """The renal value is below ``limit``.

    choice: dialysis or end-stage kidney disease counts as below any of these limits, even
    when no value is recorded."""
    renal = ctx.renal
    if not isinstance(renal, RenalFacts):
        return False
    if renal.esrd:
        return True
    return renal.rounded is not None and renal.rounded < limit


def _why_vulnerable(ctx: RuleContext, age_from: Fraction, renal_limit: Fraction,
                    child: bool = True) -> list[str]:
    why = []
    if older(ctx, age_from):
        age = ctx.patient.age
        partial = " by the older end of a partial birth date" if age and age.partial else ""
        why.append(f"age {fmt(age.high_years)} ({fmt(age_from)} or older{partial})"
                   if age else "older")
    if child and is_child(ctx):
        why.append("a child")
    if renal_below(ctx, renal_limit):
        renal = ctx.renal
        value = renal.value if isinstance(renal, RenalFacts) else None
        if value is not None and value.rounded_ml_min < renal_limit:
            why.append(f"kidney function {fmt(value.rounded_ml_min)} mL/min (below "
                       f"{fmt(renal_limit)})")
        else:
            why.append("dialysis or end-stage kidney disease")
    return why


def _renal_refs(ctx: RuleContext) -> tuple[str, ...]:
    return ctx.renal.refs if isinstance(ctx.renal, RenalFacts) else ()


# --- oral.start-dose ----------------------------------------------------------------------

def start_dose(ctx: RuleContext, order: OrderFacts) -> Finding | None:
    spec = ctx.kb.rule("oral.start-dose")
    step = order.steps[0]
    if step.known_daily_mg <= 0:
        return None
    daily, daily_text = step_daily(step)
    weight = ctx.patient.weight_kg
    evidence: tuple[str, ...] = ()
    per_kg: Fraction | None = None
    if is_child(ctx) and weight is not None and weight > 0:
        per_kg = daily / weight
        limit, moderate_from = spec.num("child_mg_kg_day"), spec.num("child_moderate_mg_kg_day")
        if per_kg <= limit:
            return None
        measure = (f"{daily_text} = {fmt(per_kg)} mg/kg/day for {fmt(weight)} kg, above the "
                   f"usual start of {fmt(limit)} mg/kg/day")
        moderate = per_kg > moderate_from
        big = f"more than {fmt(moderate_from)} mg/kg/day"
        evidence = tuple(r for r in [ctx.patient.weight_ref] if r) + evidence
        start = f"{fmt(limit)} mg/kg/day ({mg_day(limit * weight)})"
    else:
        limit, moderate_from = spec.num("adult_mg_day"), spec.num("adult_moderate_mg_day")
        if daily <= limit:
            return None
        measure = f"{daily_text}, above the usual start of {mg_day(limit)}"
        moderate = daily > moderate_from
        big = f"more than {mg_day(moderate_from)}"
        start = mg_day(limit)
    why = _why_vulnerable(ctx, spec.num("older_age"), spec.num("renal_below"), child=False)
    reasons = ([big] if moderate else []) + why
    if renal_below(ctx, spec.num("renal_below")):
        evidence += _renal_refs(ctx)
    severity = spec.grade(daily_mg=daily if per_kg is None else None, mg_kg_day=per_kg,
                          vulnerable=bool(why))
    plan = " in step 1 of the plan" if order.is_plan else ""
    return ctx.finding(
        "oral.start-dose", severity, order,
        summary=f"New baclofen therapy starting at {daily_text}{plan}: usual start is "
                f"{start.split(' (')[0]}",
        detail=f"No current baclofen regimen, so this is new therapy starting at {measure} "
               f"({describe_step(step)}){plan}"
               + (f"; {', '.join(reasons)}" if reasons else "")
               + f". Start at {start} and increase gradually.",
        evidence=evidence,
    )


# --- oral.titration-unknown -------------------------------------------------------------

_SOURCE_WORDS = {"MedicationRequest": "an order", "MedicationStatement": "a medication statement",
                 "MedicationDispense": "a dispense"}


def titration_unknown(ctx: RuleContext, order: OrderFacts, history: MedicationHistory
                      ) -> Finding | None:
    """The current regimen's daily dose cannot be read, so oral.titration-* (and a sharp cut)
    cannot judge this order (clinical-rules sections 3 and 11)."""
    current = history.current
    first = order.steps[0].daily_mg
    if current is None or first is None:
        return None
    if level_at(current, order.start).daily_mg is not None:
        return None
    problems = [ln.problem for ln in current.order.lines if ln.problem]
    why = f": {problems[0]}" if problems else ""
    return ctx.finding(
        "oral.titration-unknown", "low", order,
        summary="Current baclofen dose cannot be read: the change was not checked",
        detail=f"The current baclofen regimen is {_SOURCE_WORDS[current.source]} "
               f"({current.ref}) whose daily dose cannot be read{why}. Whether this order "
               f"({mg_day(first)}) raises the dose too soon or by too much, or cuts it "
               f"sharply, could not be checked: confirm the dose the patient takes now.",
        evidence=(current.ref,),
    )


# --- increases ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Increase:
    from_mg_day: Fraction
    to_mg_day: Fraction
    interval_days: Fraction | None     # None: unknown
    where: str                         # "over the current regimen MedicationRequest/x" ...
    refs: tuple[str, ...]


def _increases(ctx: RuleContext, order: OrderFacts, history: MedicationHistory
               ) -> list[Increase]:
    out: list[Increase] = []
    current = history.current
    first = order.steps[0].daily_mg
    if current is not None and first is not None:
        level = level_at(current, order.start)
        if level.daily_mg is not None and first > level.daily_mg:
            began = same_dose_since(history.regimens, current, order.start, ctx.kb)
            interval = elapsed_days(began, order.start) if began is not None else None
            since = f" since {began.date().isoformat()}" if began else ""
            out.append(Increase(level.daily_mg, first, interval,
                                f"over the current regimen ({current.ref}: "
                                f"{mg_day(level.daily_mg)}{since})", (current.ref,)))
    for i in range(1, len(order.steps)):
        before, step = order.steps[i - 1], order.steps[i]
        a, b = before.daily_mg, step.daily_mg
        if a is None or b is None or b <= a or before.duration_days is None:
            continue  # steps without bounds are checked against the limits only (3.3)
        out.append(Increase(a, b, before.duration_days,
                            f"in step {i + 1} of the plan, after {fmt(before.duration_days)} "
                            f"days of step {i}", ()))
    return out


def _worst(found: list[tuple[str, Increase]]) -> tuple[str, Increase] | None:
    return max(found, key=lambda f: SEVERITY_RANK[f[0]]) if found else None


def interval_rule(ctx: RuleContext, order: OrderFacts, increases: list[Increase]
                  ) -> Finding | None:
    spec = ctx.kb.rule("oral.titration-interval")
    min_days, vulnerable_days = spec.num("min_days"), spec.num("vulnerable_min_days")
    why = _why_vulnerable(ctx, spec.num("older_age"), spec.num("renal_below"))
    hits: list[tuple[str, Increase]] = []
    for inc in increases:
        if inc.interval_days is None:
            continue
        if inc.interval_days < min_days or (why and inc.interval_days < vulnerable_days):
            hits.append((spec.grade(interval_days=inc.interval_days), inc))
    worst = _worst(hits)
    if worst is None:
        return None
    severity, inc = worst
    need = min_days if severity == "moderate" else vulnerable_days
    because = f" for this patient ({', '.join(why)})" if severity == "low" else ""
    return ctx.finding(
        "oral.titration-interval", severity, order,
        summary=f"Baclofen raised from {mg_day(inc.from_mg_day)} to {mg_day(inc.to_mg_day)} "
                f"after {fmt(inc.interval_days or 0)} days: too soon",
        detail=f"The daily dose rises from {mg_day(inc.from_mg_day)} to "
               f"{mg_day(inc.to_mg_day)} {inc.where}, {fmt(inc.interval_days or 0)} days after "
               f"the previous dose started; increases should be at least {fmt(need)} days "
               f"apart{because}.",
        evidence=inc.refs + (_renal_refs(ctx) if severity == "low" and renal_below(
            ctx, spec.num("renal_below")) else ()),
    )


def step_rule(ctx: RuleContext, order: OrderFacts, increases: list[Increase]
              ) -> Finding | None:
    spec = ctx.kb.rule("oral.titration-step")
    step_max = spec.num("step_mg_day")
    hits: list[tuple[str, Increase]] = []
    for inc in increases:
        rise = inc.to_mg_day - inc.from_mg_day
        if rise > step_max:
            hits.append((spec.grade(rise_mg_day=rise), inc))
    worst = _worst(hits)
    if worst is None:
        return None
    severity, inc = worst
    rise = inc.to_mg_day - inc.from_mg_day
    return ctx.finding(
        "oral.titration-step", severity, order,
        summary=f"Baclofen raised by {mg_day(rise)} in one step (usual step at most "
                f"{mg_day(step_max)})",
        detail=f"The daily dose rises from {mg_day(inc.from_mg_day)} to "
               f"{mg_day(inc.to_mg_day)} {inc.where}: an increase of {mg_day(rise)}, more than "
               f"the usual step of {mg_day(step_max)} (5 mg per dose, three doses a day).",
        evidence=inc.refs,
    )
