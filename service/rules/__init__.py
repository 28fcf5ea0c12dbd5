"""Pure rules: typed facts in, findings out. No Flask, no environment, no clock, no FHIR JSON.

Each family module exposes ``rules(ctx, order) -> list[Finding]`` for one checked order. The
engine decides which families apply to an order (route, status, mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction

from ..findings import Correction, Finding, Judged, finding_id
from ..knowledge import Knowledge, Profile
from ..model import (
    EGFR_SOURCES,
    MedicationHistory,
    MedicationUse,
    OrderFacts,
    PatientFacts,
    RenalCandidate,
    RenalFacts,
)
from ..wording import floor_to_step, fmt, mg, mg_day, times_per_day


@dataclass(frozen=True)
class RuleContext:
    kb: Knowledge
    profile: Profile
    patient: PatientFacts
    check_time: datetime
    orders: tuple[OrderFacts, ...]          # every order of this call (checked orders)
    others: tuple[OrderFacts, ...]          # baclofen MedicationRequests from the context
    mode: str = "order"                     # "order" (a new or changed order) or "review"
    hook: str | None = None                 # CDS hook name when called through CDS Hooks
    renal: RenalFacts | None = None         # kidney function (service/renal.py)
    history: MedicationHistory | None = None  # baclofen history (service/history.py)
    medications: tuple[MedicationUse, ...] = ()   # medicines in use (section 8)
    extra: dict[str, object] = field(default_factory=dict)

    def finding(
        self,
        rule_id: str,
        severity: str,
        order: OrderFacts,
        summary: str,
        detail: str,
        implicated: tuple[str, ...] = (),
        evidence: tuple[str, ...] = (),
        correction: Correction | None = None,
        *,
        daily_mg: Fraction | None = None,
        dose_mg: Fraction | None = None,
        limit: Fraction | None = None,
        limit_unit: str = "mg/day",
        renal: RenalCandidate | None = None,
    ) -> Finding:
        """A finding with its id, code and the numbers judged: ``daily_mg`` (default: the
        order's highest known daily dose), ``dose_mg``, the ``limit`` and the kidney value
        where the rule judged one."""
        spec = self.kb.rule(rule_id)  # unknown ids fail loudly in tests
        if daily_mg is None:
            known = [s.daily_mg for s in order.steps if s.daily_mg is not None]
            daily_mg = max(known) if known else None
        judged = Judged(
            daily_mg=daily_mg, dose_mg=dose_mg, limit=limit,
            limit_unit=limit_unit if limit is not None else None,
            renal_ml_min=renal.rounded_ml_min if renal else None,
            renal_kind=_renal_kind(renal.source) if renal else None,
            renal_source=renal.source if renal else None,
        )
        return Finding(
            rule_id=rule_id,
            severity=severity,
            order_ref=order.ref,
            summary=summary[:139],
            detail=detail,
            implicated=implicated,
            evidence=evidence,
            dose_key=order.dose_key,
            correction=correction,
            id=finding_id(rule_id, order.ref, order.dose_key, self.kb.version),
            code=spec.code,
            judged=judged,
        )


def _renal_kind(source: str) -> str:
    if source == "ckd-stage":
        return "CKD stage"
    return "eGFR" if source in EGFR_SOURCES else "CrCl"


def suggest_oral(ctx: RuleContext, cap_mg_day: Fraction, current_per_day: Fraction | None
                 ) -> Correction | None:
    """A dose that can be given: at most ``cap_mg_day`` and the profile's single maximum, in
    ``dosing.usual_doses_per_day`` doses, rounded down to ``dosing.suggestion_step_mg``
    (clinical-rules section 5)."""
    dosing = ctx.kb.typed.dosing
    step = dosing.suggestion_step_mg
    usual = list(dosing.usual_doses_per_day)
    single_max = ctx.profile.num("max_single_mg")
    choices = [current_per_day] if current_per_day in usual else []
    choices += [n for n in usual if n not in choices]
    best: Correction | None = None
    for per_day in choices:
        if per_day is None:
            continue
        dose = floor_to_step(min(cap_mg_day / per_day, single_max), step)
        if dose <= 0:
            continue
        candidate = Correction(
            dose_mg=dose,
            per_day=per_day,
            label=f"{mg(dose)} {times_per_day(per_day)} ({mg_day(dose * per_day)})",
        )
        if best is None or dose * per_day > best.dose_mg * best.per_day:
            best = candidate
    if best is None and cap_mg_day > 0:
        dose = floor_to_step(cap_mg_day, step)
        if dose > 0:
            best = Correction(dose, Fraction(1), f"{mg(dose)} once a day ({mg_day(dose)})")
    return best


__all__ = ["RuleContext", "suggest_oral", "fmt", "mg", "mg_day", "times_per_day"]
