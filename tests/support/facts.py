"""A small factory of typed facts (service/model.py) for calling rules directly: no FHIR JSON,
no facts stage. One call per fact, with the defaults a plain adult oral order needs:

    ctx = context(order(line(30, per_day=4)), patient=patient(age=70), renal=renal(40))
    found = by_rule(oral.rules(ctx, ctx.orders[0]))

Doses are in mg, kidney values in mL/min, ages in years; numbers may be given as int, str
("2/3") or Fraction and are kept exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from fractions import Fraction

from service.clinical.renal import band_of, round_renal
from service.findings import Finding
from service.knowledge import Knowledge, load
from service.model import (
    AgeFacts,
    ConditionEvidence,
    DoseLine,
    MedicationHistory,
    MedicationUse,
    OrderFacts,
    PatientFacts,
    Regimen,
    RenalBand,
    RenalCandidate,
    RenalFacts,
    RenalSource,
    Route,
    Step,
)
from service.rules import RuleContext

KB: Knowledge = load()
T = datetime(2026, 11, 25, 10, tzinfo=UTC)  # the check time, and the orders' start
Number = int | str | Fraction


def line(dose_mg: Number | None, per_day: Number | None = None, *, prn: bool = False,
         single: bool = False, index: int = 0, written: str | None = None,
         **kw: object) -> DoseLine:
    """One dosage line: ``dose_mg`` per administration, ``per_day`` administrations a day."""
    dose = None if dose_mg is None else Fraction(dose_mg)
    return DoseLine(
        index=index, sequence=None, dose_mg=dose,
        written=written or (f"{dose} mg" if dose is not None else "?"),
        written_unit="mg" if dose is not None else None,
        per_day=None if per_day is None else Fraction(per_day),
        single=single, prn=prn, **kw,  # type: ignore[arg-type]
    )


def order(*lines: DoseLine, ref: str = "MedicationRequest/ord-1", route: Route = "oral",
          status: str = "draft", start: datetime = T, end: datetime | None = None,
          name: str = "baclofen 10 MG Oral Tablet", checked: bool = True,
          **kw: object) -> OrderFacts:
    """A baclofen order whose lines apply together (one step)."""
    return OrderFacts(
        ref=ref, status=status, is_baclofen=True, route=route, name=name,
        steps=(Step(None, tuple(lines)),) if lines else (), start=start, end=end,
        dose_key="|".join(ln.written for ln in lines), checked=checked,
        **kw,  # type: ignore[arg-type]
    )


def patient(age: Number | None = 50, sex: str | None = "female", *,
            weight_kg: Number | None = None, height_cm: Number | None = None,
            ref: str = "Patient/pat-1") -> PatientFacts:
    years = None if age is None else Fraction(age)
    return PatientFacts(
        ref=ref, sex=sex,
        age=None if years is None else AgeFacts(years, years, partial=False),
        weight_kg=None if weight_kg is None else Fraction(weight_kg),
        weight_ref=None if weight_kg is None else "Observation/wt-1",
        height_cm=None if height_cm is None else Fraction(height_cm),
        height_ref=None if height_cm is None else "Observation/ht-1",
    )


def renal(ml_min: Number | None = None, *, source: RenalSource = "crcl",
          band: RenalBand | None = None, dialysis: Iterable[str] = (), at: datetime = T,
          stale: bool = False, ref: str = "Observation/cr-1") -> RenalFacts:
    """The kidney facts: one value (its band from the knowledge's band limits unless given)
    and any dialysis evidence (one text each)."""
    evidence = tuple(ConditionEvidence(f"Condition/dialysis-{n}", text)
                     for n, text in enumerate(dialysis))
    if ml_min is None:
        return RenalFacts(value=None, dialysis=evidence)
    spec = KB.typed.patient_context.renal
    rounded = round_renal(Fraction(ml_min), spec.round_to)
    kind = "eGFR" if source in {"egfr", "ckd-epi-2021", "bedside-schwartz"} else "CrCl"
    value = RenalCandidate(
        source=source, value_ml_min=Fraction(ml_min), rounded_ml_min=rounded,
        band=band or band_of(rounded, spec), at=at, stale=stale, refs=(ref,),
        text=f"{kind} {rounded} mL/min",
    )
    return RenalFacts(value=value, dialysis=evidence, candidates=(value,))


def regimen(order_facts: OrderFacts, *, start: datetime | None = None,
            end: datetime | None = None, ref: str = "MedicationRequest/old-1") -> Regimen:
    """A past or current baclofen regimen with the dosage of ``order_facts``."""
    return Regimen(ref=ref, source="MedicationRequest", status="active",
                   route=order_facts.route, start=start, end=end, end_basis="open",
                   order=order_facts)


def history(*regimens: Regimen, current: Regimen | None = None, at: datetime = T
            ) -> MedicationHistory:
    """Baclofen history; no regimen at all is new therapy."""
    return MedicationHistory(regimens=regimens, at=at, current=current)


def context(*orders: OrderFacts, patient_facts: PatientFacts | None = None,
            renal_facts: RenalFacts | None = None, history_facts: MedicationHistory | None = None,
            profile: str = "us", others: tuple[OrderFacts, ...] = (),
            medications: tuple[MedicationUse, ...] = (), mode: str = "order") -> RuleContext:
    """What a rule is called with: the knowledge, a profile and the facts above."""
    return RuleContext(
        kb=KB, profile=KB.profile(profile), patient=patient_facts or patient(),
        check_time=T, orders=orders, others=others, mode=mode,
        renal=renal_facts if renal_facts is not None else renal(),
        history=history_facts if history_facts is not None else history(),
        medications=medications,
    )


def by_rule(findings: Iterable[Finding]) -> dict[str, Finding]:
    """The findings by rule id (a rule gives at most one finding per order)."""
    return {f.rule_id: f for f in findings}
