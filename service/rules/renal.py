"""Kidney function (clinical-rules section 5): renal.dose-band, renal.dialysis, renal.unknown,
renal.stale and geriatric.renal (merged into a dose-band or dialysis finding of the same order).

Every rule reads the one renal value (``ctx.renal.value``), rounded to
``patient_context.renal.round_to``.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from ..clinical.renal import renal_cap
from ..clinical.time import elapsed_days
from ..findings import Finding, worse
from ..model import EGFR_SOURCES, OrderFacts, RenalFacts
from ..wording import fmt, mg_day, renal_cap_text
from . import RuleContext, suggest_oral
from .describe import age_text, describe_step, step_daily, step_label, worst_daily_step
from .pediatric import age_cap, is_child


def rules(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    renal = ctx.renal
    if order.route != "oral" or not isinstance(renal, RenalFacts):
        return []
    out: list[Finding] = []
    main = dose_band(ctx, order, renal) or dialysis(ctx, order, renal)
    elderly = geriatric(ctx, order, renal)
    if main is not None and elderly is not None:
        main = merge(main, elderly)
        elderly = None
    for found in (main, elderly, unknown(ctx, order, renal), stale(ctx, order, renal)):
        if found is not None:
            out.append(_with_transplant(found, renal))
    return out


def _with_transplant(found: Finding, renal: RenalFacts) -> Finding:
    """The detail mentions a kidney transplant that set older ESRD evidence aside, and the
    evidence cites it (clinical-rules section 2)."""
    if not renal.superseded:
        return found
    note = (f" After a kidney transplant ({'; '.join(e.text for e in renal.transplant)}), "
            f"older end-stage kidney disease or dialysis records no longer count: "
            f"{'; '.join(e.text for e in renal.superseded)}.")
    return replace(found, detail=found.detail + note,
                   evidence=tuple(dict.fromkeys(found.evidence + renal.refs)))


def older(ctx: RuleContext, age_from: Fraction) -> bool:
    """Age >= ``age_from`` on the oldest possible age (a partial birth date makes it fire)."""
    age = ctx.patient.age
    return age is not None and age.high_years >= age_from


def applicable_cap(ctx: RuleContext) -> tuple[Fraction, str]:
    """The cap the kidney fraction scales: the age cap for children, else the profile
    maximum (clinical-rules section 5)."""
    if is_child(ctx):
        child = age_cap(ctx)
        if child is not None:
            return child[0], f"the maximum for a child {child[1]}"
    return ctx.profile.num("max_daily_mg"), f"the {ctx.profile.label} maximum"


def dose_band(ctx: RuleContext, order: OrderFacts, renal: RenalFacts) -> Finding | None:
    value = renal.value
    band = renal.band
    if value is None or band not in {"mild", "moderate", "severe"}:
        return None
    step = worst_daily_step(order)
    if step is None:
        return None
    daily, daily_text = step_daily(step)
    base, base_text = applicable_cap(ctx)
    cap = renal_cap(band, base, ctx.kb.typed.patient_context.renal)
    if cap is None or daily <= cap.cap_mg_day:
        return None
    spec = ctx.kb.rule("renal.dose-band")
    severity = spec.grade(severe_band_daily_mg=daily if band == "severe" else None)
    correction = suggest_oral(ctx, cap.cap_mg_day, step.scheduled_per_day)
    example = f", for example {correction.label}" if correction else ""
    label = step_label(order, step)
    cap_text = renal_cap_text(cap.band, cap.cap_mg_day, cap.fraction, cap.of_mg_day, base_text)
    return ctx.finding(
        "renal.dose-band", severity, order,
        summary=f"Baclofen {daily_text}{label} is above the {mg_day(cap.cap_mg_day)} cap for "
                f"{band} kidney impairment ({_short(value.rounded_ml_min, value.source)})",
        detail=f"{value.text} is in the {band} band: {cap_text}. Ordered {daily_text} "
               f"({describe_step(step)}){label}. Baclofen is cleared by the kidneys; reduce to "
               f"at most {mg_day(cap.cap_mg_day)}{example}.",
        evidence=renal.refs,
        correction=correction,
        daily_mg=daily, limit=cap.cap_mg_day, renal=value,
    )


def _short(rounded: Fraction, source: str) -> str:
    if source == "ckd-stage":
        return f"CKD stage on the problem list, counted as {fmt(rounded)} mL/min"
    return f"{'eGFR' if source in EGFR_SOURCES else 'CrCl'} {fmt(rounded)} mL/min"


def dialysis(ctx: RuleContext, order: OrderFacts, renal: RenalFacts) -> Finding | None:
    if not renal.esrd:
        return None
    spec = ctx.kb.rule("renal.dialysis")
    limit = spec.num("high_above_mg_day")
    reasons = [e.text for e in renal.dialysis]
    if renal.value is not None and renal.value.band == "esrd":
        reasons.append(f"{renal.value.text}, below "
                       f"{fmt(ctx.kb.typed.patient_context.renal.esrd_below)} mL/min")
    step = worst_daily_step(order)
    correction = None
    if step is None:
        severity, ordered = "moderate", "The daily dose cannot be read."
    else:
        daily, daily_text = step_daily(step)
        severity = spec.grade(daily_mg=daily)
        ordered = f"Ordered {daily_text} ({describe_step(step)}){step_label(order, step)}."
        if daily > limit:
            correction = suggest_oral(ctx, limit, step.scheduled_per_day)
    example = f", for example {correction.label}" if correction else ""
    return ctx.finding(
        "renal.dialysis", severity, order,
        summary="Baclofen with dialysis or end-stage kidney disease: toxicity risk",
        detail=f"Dialysis or end-stage kidney disease: {'; '.join(reasons)}. {ordered} "
               f"Baclofen accumulates in kidney failure (encephalopathy reported at 5-60 "
               f"mg/day); avoid it, or give at most about {mg_day(limit)}{example}, with close "
               f"monitoring.",
        evidence=renal.refs,
        correction=correction,
        daily_mg=step_daily(step)[0] if step else None, limit=limit, renal=renal.value,
    )


def geriatric(ctx: RuleContext, order: OrderFacts, renal: RenalFacts) -> Finding | None:
    spec = ctx.kb.rule("geriatric.renal")
    value = renal.value
    if value is None or not older(ctx, spec.num("older_age")):
        return None
    if value.rounded_ml_min >= spec.num("value_below"):
        return None
    step = worst_daily_step(order)
    daily = step_daily(step)[0] if step else None
    severity = spec.grade(daily_mg=daily, renal_ml_min=value.rounded_ml_min)
    dose = f" Ordered {step_daily(step)[1]}." if step else ""
    return ctx.finding(
        "geriatric.renal", severity, order,
        summary=f"Baclofen at {age_text(ctx.patient.age, 'old')} with kidney function below "
                f"{fmt(spec.num('value_below'))} mL/min: avoid (Beers 2023)",
        detail=f"{age_text(ctx.patient.age, 'old').capitalize()} and {value.text}, below "
               f"{fmt(spec.num('value_below'))} mL/min: Beers 2023 advises avoiding baclofen "
               f"(risk of encephalopathy).{dose}",
        evidence=renal.refs,
        daily_mg=daily, renal=value,
    )


def merge(main: Finding, elderly: Finding) -> Finding:
    """geriatric.renal folds into the dose-band or dialysis finding, at the higher severity."""
    return replace(
        main,
        severity=worse(main.severity, elderly.severity),
        detail=f"{main.detail} Also (geriatric.renal): {elderly.detail}",
        evidence=tuple(dict.fromkeys(main.evidence + elderly.evidence)),
    )


def unknown(ctx: RuleContext, order: OrderFacts, renal: RenalFacts) -> Finding | None:
    spec = ctx.kb.rule("renal.unknown")
    if renal.value is not None or renal.esrd:
        return None
    is_older = older(ctx, spec.num("older_age"))
    if not is_older and not renal.ckd and not renal.unusable_creatinine:
        return None
    why = []
    if is_older:
        why.append(age_text(ctx.patient.age, 'old'))
    if renal.ckd:
        why.append("chronic kidney disease recorded: " + "; ".join(e.text for e in renal.ckd))
    if renal.unusable_creatinine:
        why.append("no kidney function could be estimated from the creatinine "
                   f"({', '.join(renal.unusable_creatinine)})")
    fresh_height = ctx.kb.typed.patient_context.height.child_max_age_days
    what = (f"eGFR, or creatinine with a height within {fmt(fresh_height)} days"
            if renal.egfr_only else "eGFR, creatinine clearance or creatinine")
    notes = f" ({'; '.join(renal.notes)})" if renal.notes else ""
    return ctx.finding(
        "renal.unknown", "low", order,
        summary="Kidney function unknown: baclofen dose cannot be checked against it",
        detail=f"No usable kidney function result ({what}, within "
               f"{fmt(ctx.kb.typed.patient_context.renal.max_age_days)} days)"
               f"{notes}, and {' and '.join(why)}. Baclofen is cleared by the kidneys; check "
               f"kidney function before relying on this dose.",
        evidence=tuple(dict.fromkeys([e.ref for e in renal.ckd if e.ref]
                                     + list(renal.unusable_creatinine))),
    )


def stale(ctx: RuleContext, order: OrderFacts, renal: RenalFacts) -> Finding | None:
    spec = ctx.kb.rule("renal.stale")
    value = renal.value
    if value is None or not value.stale:
        return None
    if not (older(ctx, spec.num("older_age")) or value.rounded_ml_min < spec.num("value_below")):
        return None
    days = elapsed_days(value.at, ctx.check_time)
    limit = ctx.kb.typed.patient_context.renal.stale_after_days
    return ctx.finding(
        "renal.stale", "low", order,
        summary=f"Kidney function result is {fmt(days // 1)} days old",
        detail=f"The kidney function used, {value.text}, is {fmt(days // 1)} days old (older "
               f"than {fmt(limit)} days). Recheck kidney function; it may have changed.",
        evidence=renal.refs,
        renal=value,
    )
