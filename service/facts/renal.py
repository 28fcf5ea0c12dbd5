"""Kidney facts read from the record (clinical-rules sections 2 and 5): renal measures from
Observations (reported eGFR and creatinine clearance, creatinine turned into an estimate),
bounded results, freshness, the one renal value, dialysis/ESRD and kidney transplant from
Conditions and Procedures, chronic kidney disease and a recorded CKD stage.

The arithmetic is service/clinical/renal.py, the sentences service/wording.py; every number
comes from ``patient_context.renal`` (and ``.dialysis``, ``.kidney_transplant``, ``.ckd``) of
the knowledge. Results that cannot be used are skipped and ``RenalFacts.notes`` says why.

- ``read_renal(resources, patient, check_time, kb, egfr_only=False) -> RenalFacts``:
  ``resources`` are ``(reference, resource JSON)`` pairs (the context of one patient),
  ``patient`` the patient's facts (age, sex, weight, height), ``egfr_only`` for children
  (judged on a reported eGFR or bedside Schwartz only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from ..clinical.renal import (
    RenalInputError,
    adjusted_body_weight_kg,
    band_of,
    bedside_schwartz,
    bmi,
    choose,
    ckd_epi_2021,
    cockcroft_gault,
    creatinine_umol_l_to_mg_dl,
    ideal_body_weight_kg,
    just_under,
    round_renal,
)
from ..clinical.time import elapsed_days
from ..fhirjson import (
    JSON,
    as_dict,
    as_number,
    as_str,
    codings,
    concept_texts,
    has_code,
    parse_instant,
)
from ..knowledge import Knowledge
from ..knowledge.sections import Renal
from ..model import (
    ConditionEvidence,
    PatientFacts,
    RenalBand,
    RenalCandidate,
    RenalFacts,
    RenalSource,
)
from ..wording import (
    actual_weight_text,
    adjusted_weight_text,
    ckd_epi_how,
    ckd_stage_text,
    cockcroft_gault_how,
    condition_label,
    creatinine_text,
    day,
    dialysis_procedure_text,
    estimate_age_text,
    estimated_renal_text,
    fmt,
    renal_note,
    reported_renal_text,
    schwartz_how,
    transplant_condition_text,
    transplant_procedure_text,
)
from .patient import Resource, condition_counts, has_loinc, observation_time, usable_result


def _spec(kb: Knowledge) -> Renal:
    return kb.typed.patient_context.renal


# --- reading results --------------------------------------------------------------------

@dataclass(frozen=True)
class _Reading:
    value: Fraction
    bound: str | None              # ">", "<" or None
    written: str                   # as written (">60")


def _read_value(obs: JSON) -> _Reading | None:
    """A numeric result, with a comparator from valueQuantity or from a string (">60")."""
    q = as_dict(obs.get("valueQuantity"))
    if q:
        value = as_number(q.get("value"))
        if value is None:
            return None
        comp = as_str(q.get("comparator"))
        bound = {">": ">", ">=": ">", "<": "<", "<=": "<="}.get(comp or "")
        if bound == "<=":
            bound = None  # choice: "at most X" counts as X
        return _Reading(value, bound, f"{comp or ''}{fmt(value)}")
    for key in ("valueString", "valueInteger"):
        raw = obs.get(key)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return _Reading(Fraction(raw), None, str(raw))
        text = as_str(raw)
        if text is None:
            continue
        t = text.strip().replace(" ", "")
        bound = None
        for prefix, b in ((">=", ">"), ("<=", None), (">", ">"), ("<", "<")):
            if t.startswith(prefix):
                bound, t = b, t[len(prefix):]
                break
        number = as_number(t.split("mL")[0].split("ml")[0])
        if number is None:
            return None
        return _Reading(number, bound, text.strip())
    return None


def _unit(obs: JSON) -> str | None:
    q = as_dict(obs.get("valueQuantity"))
    return as_str(q.get("code")) or as_str(q.get("unit"))


def _norm_unit(unit: str) -> str:
    return unit.replace(" ", "").lower()


@dataclass(frozen=True)
class _Creatinine:
    ref: str
    mg_dl: Fraction
    written: str
    at: datetime


def read_renal(
    resources: Iterable[Resource],
    patient: PatientFacts,
    check_time: datetime,
    kb: Knowledge,
    egfr_only: bool = False,
) -> RenalFacts:
    """Every usable kidney measure, the one renal value, dialysis/ESRD and CKD evidence.

    ``egfr_only``: children (below ``cockcroft_gault.age_from``) are judged on a reported
    eGFR or bedside Schwartz only.
    """
    s = _spec(kb)
    resources = list(resources)
    notes: list[str] = []
    candidates: list[RenalCandidate] = []
    creatinines: list[_Creatinine] = []
    max_days, stale_days = s.max_age_days, s.stale_after_days
    rate_units = {_norm_unit(u) for u in s.rate_units}
    for ref, obs in resources:
        if obs.get("resourceType") != "Observation":
            continue
        kind: str | None = None
        if has_loinc(obs, s.egfr_loinc, kb):
            kind = "egfr"
        elif has_loinc(obs, s.crcl_loinc, kb):
            kind = "crcl"
        elif has_loinc(obs, s.creatinine_loinc, kb):
            kind = "creatinine"
        if kind is None:
            continue
        if not usable_result(obs, kb):
            notes.append(renal_note("status", ref=ref, status=obs.get("status")))
            continue
        at = observation_time(obs, check_time.tzinfo)
        if at is None:
            notes.append(renal_note("no-date", ref=ref))
            continue
        age_days = elapsed_days(at, check_time)
        if age_days > max_days:
            notes.append(renal_note("too-old", ref=ref, day=day(at), days=max_days))
            continue
        reading = _read_value(obs)
        if reading is None or reading.value <= 0:
            notes.append(renal_note("unreadable", ref=ref))
            continue
        unit = _unit(obs)
        if kind == "crcl" and egfr_only:
            notes.append(renal_note("child-crcl", ref=ref,
                                    adult_from=s.cockcroft_gault.age_from))
            continue
        if kind == "creatinine":
            cr = _creatinine_mg_dl(obs, reading, unit, s)
            if cr is None:
                notes.append(renal_note("creatinine-unit", ref=ref, unit=unit))
                continue
            if reading.bound == ">":
                notes.append(renal_note("creatinine-bound", ref=ref, written=reading.written))
                continue
            plausible = s.plausible_creatinine_mg_dl
            if not plausible.low <= cr <= plausible.high:
                notes.append(renal_note("creatinine-implausible", ref=ref,
                                        written=reading.written, unit=unit or ""))
                continue
            written = creatinine_text(reading.written, cr, cr == reading.value)
            creatinines.append(_Creatinine(ref, cr, written, at))
            continue
        # choice: any unit written as mL/min (per 1.73 m2 in any spelling) is accepted
        if unit is not None and not (_norm_unit(unit) in rate_units
                                     or _norm_unit(unit).startswith("ml/min")):
            notes.append(renal_note("rate-unit", ref=ref, unit=unit))
            continue
        if reading.value > s.plausible_rate_ml_min_high:
            notes.append(renal_note("rate-implausible", ref=ref, written=reading.written))
            continue
        candidates.append(_reported(kind, ref, reading, at, age_days > stale_days, kb))
    unusable: list[str] = []
    candidates += _computed(creatinines, patient, check_time, stale_days, kb, notes, unusable)
    value = choose(candidates, s.same_time_window_days)
    if value is None:
        value = ckd_stage_value(resources, check_time, kb)
    kidney = kidney_states(resources, check_time, kb)
    return RenalFacts(
        value=value,
        dialysis=kidney.dialysis,
        ckd=ckd_evidence(resources, kb),
        candidates=tuple(candidates),
        notes=tuple(notes),
        egfr_only=egfr_only,
        unusable_creatinine=tuple(unusable),
        transplant=kidney.transplant,
        superseded=kidney.superseded,
    )


def _creatinine_mg_dl(obs: JSON, reading: _Reading, unit: str | None, s: Renal
                      ) -> Fraction | None:
    """mg/dL from the result's unit; the LOINC code's property only when it has none."""
    if unit is None:
        for coding in codings(obs.get("code")):
            code = as_str(coding.get("code"))
            if code is not None and code in s.creatinine_default_unit:
                unit = s.creatinine_default_unit[code]
                break
    if unit is None:
        return None
    u = _norm_unit(unit)
    if u in {_norm_unit(x) for x in s.creatinine_mg_dl_units}:
        return reading.value
    if u in {_norm_unit(x) for x in s.creatinine_umol_l_units}:
        return creatinine_umol_l_to_mg_dl(reading.value, s.umol_l_per_mg_dl)
    return None


def _reported(kind: str, ref: str, reading: _Reading, at: datetime, stale: bool,
              kb: Knowledge) -> RenalCandidate:
    s = _spec(kb)
    source: RenalSource = "egfr" if kind == "egfr" else "crcl"
    value = reading.value
    band: RenalBand
    normal_from = None
    if reading.bound == ">" and value >= s.bounded_normal_from:
        rounded = round_renal(value, s.round_to)
        band = "normal"
        normal_from = s.bounded_normal_from
    elif reading.bound == "<":
        rounded = just_under(value, s.round_to)
        value = rounded
        band = band_of(rounded, s)
    else:
        rounded = round_renal(value, s.round_to)
        band = band_of(rounded, s)
    text = reported_renal_text(source == "egfr", reading.written, at, reading.bound,
                               reading.value, normal_from)
    return RenalCandidate(source, value, rounded, band, at, stale, (ref,), text,
                          reading.bound)


def _computed(creatinines: list[_Creatinine], patient: PatientFacts, check_time: datetime,
              stale_days: Fraction, kb: Knowledge, notes: list[str], unusable: list[str]
              ) -> list[RenalCandidate]:
    """A value from every usable creatinine (clinical-rules section 2): Cockcroft-Gault for
    adults with a weight, else CKD-EPI 2021; bedside Schwartz for children with a fresh height
    (``height.child_max_age_days``). A creatinine from which no value can be made is named in
    ``unusable`` (renal.unknown reads it).

    choice: with a partial birth date the older end of the age range is used (the lower
    clearance); the adult formulas are applied only when the youngest possible age reaches
    ``cockcroft_gault.age_from``, bedside Schwartz when the youngest reaches
    ``bedside_schwartz.age_from`` and the oldest is below ``bedside_schwartz.age_below``.
    """
    if not creatinines:
        return []
    s = _spec(kb)
    age = patient.age
    if age is None:
        notes.append(renal_note("age-unknown"))
        unusable += [c.ref for c in creatinines]
        return []
    if age.low_years < s.cockcroft_gault.age_from:
        return _schwartz(creatinines, patient, check_time, stale_days, kb, notes, unusable)
    female = patient.sex != "male"
    sex = patient.sex if patient.sex in {"male", "female"} else None
    age_years = age.high_years
    age_text = estimate_age_text(age_years, age.partial)
    if patient.weight_kg is None:
        notes.append(renal_note("no-weight"))
        return _ckd_epi(creatinines, patient, age_years, age_text, check_time, stale_days, kb,
                        notes, unusable)
    weight, weight_text, refs = _weight_for_cg(patient, female, kb)
    older = kb.typed.patient_context.older_age
    older_from = older if age_years >= older else None

    def estimate(cr: _Creatinine) -> tuple[Fraction, str]:
        return cockcroft_gault(age_years, weight, cr.mg_dl, female, s.cockcroft_gault), (
            cockcroft_gault_how(weight_text, cr.written, age_text, sex, older_from))

    return _estimated(creatinines, "cockcroft-gault", "Cockcroft-Gault", estimate, refs,
                      check_time, stale_days, kb, notes, unusable)


def _estimated(creatinines: list[_Creatinine], source: RenalSource, label: str,
               estimate: Callable[[_Creatinine], tuple[Fraction, str]],
               extra_refs: tuple[str, ...], check_time: datetime, stale_days: Fraction,
               kb: Knowledge, notes: list[str], unusable: list[str]) -> list[RenalCandidate]:
    """A value computed here from each creatinine: ``estimate`` gives (value, how)."""
    out = []
    for cr in creatinines:
        try:
            value, how = estimate(cr)
        except RenalInputError as exc:
            notes.append(renal_note("not-computed", label=label, why=str(exc)))
            unusable.append(cr.ref)
            continue
        s = _spec(kb)
        rounded = round_renal(value, s.round_to)
        text = estimated_renal_text(source == "cockcroft-gault", rounded, cr.at, label, how)
        out.append(RenalCandidate(
            source, value, rounded, band_of(rounded, s), cr.at,
            elapsed_days(cr.at, check_time) > stale_days, (cr.ref, *extra_refs), text))
    return out


def _ckd_epi(creatinines: list[_Creatinine], patient: PatientFacts, age_years: Fraction,
             age_text: str, check_time: datetime, stale_days: Fraction, kb: Knowledge,
             notes: list[str], unusable: list[str]) -> list[RenalCandidate]:
    """CKD-EPI 2021 for adults without a usable weight; other, unknown or missing sex: the
    lower of the two estimates (clinical-rules section 2)."""

    c = _spec(kb).ckd_epi_2021

    def estimate(cr: _Creatinine) -> tuple[Fraction, str]:
        if patient.sex in {"male", "female"}:
            value = ckd_epi_2021(age_years, cr.mg_dl, patient.sex == "female", c)
            sex = patient.sex
        else:
            value = min(ckd_epi_2021(age_years, cr.mg_dl, True, c),
                        ckd_epi_2021(age_years, cr.mg_dl, False, c))
            sex = None
        return value, ckd_epi_how(cr.written, age_text, sex)

    return _estimated(creatinines, "ckd-epi-2021", "CKD-EPI 2021 creatinine", estimate, (),
                      check_time, stale_days, kb, notes, unusable)


def _schwartz(creatinines: list[_Creatinine], patient: PatientFacts, check_time: datetime,
              stale_days: Fraction, kb: Knowledge, notes: list[str], unusable: list[str]
              ) -> list[RenalCandidate]:
    """Bedside Schwartz for children (``bedside_schwartz`` ages) with a fresh height."""
    c = _spec(kb).bedside_schwartz
    age = patient.age
    assert age is not None
    if age.low_years < c.age_from:
        notes.append(renal_note("too-young", age_from=c.age_from))
        unusable += [cr.ref for cr in creatinines]
        return []
    height = patient.height_cm
    if height is None:
        notes.append(renal_note("no-height",
                                days=kb.typed.patient_context.height.child_max_age_days))
        unusable += [cr.ref for cr in creatinines]
        return []

    def estimate(cr: _Creatinine) -> tuple[Fraction, str]:
        return bedside_schwartz(age.low_years, height, cr.mg_dl, c), (
            schwartz_how(c.k, height, cr.written))

    return _estimated(creatinines, "bedside-schwartz", "bedside Schwartz", estimate,
                      tuple(r for r in [patient.height_ref] if r), check_time, stale_days, kb,
                      notes, unusable)


def _weight_for_cg(patient: PatientFacts, female: bool, kb: Knowledge
                   ) -> tuple[Fraction, str, tuple[str, ...]]:
    """Actual weight, or the adjusted weight when the BMI reaches
    ``cockcroft_gault.obesity_bmi_from`` and the height is known."""
    assert patient.weight_kg is not None
    actual = patient.weight_kg
    refs = tuple(r for r in [patient.weight_ref] if r)
    s = _spec(kb)
    cg = s.cockcroft_gault
    if patient.height_cm is not None:
        body_mass = bmi(actual, patient.height_cm)
        if body_mass >= cg.obesity_bmi_from:
            ideal = ideal_body_weight_kg(patient.height_cm, female, s.ideal_body_weight)
            if ideal < actual:
                adjusted = adjusted_body_weight_kg(actual, ideal, cg.adjusted_weight_fraction)
                refs += tuple(r for r in [patient.height_ref] if r)
                return adjusted, adjusted_weight_text(
                    adjusted, ideal, cg.adjusted_weight_fraction, actual, body_mass,
                    patient.height_cm), refs
    return actual, actual_weight_text(actual), refs


# --- conditions and procedures ------------------------------------------------------------

def _icd10(concept: Any, kb: Knowledge) -> list[str]:
    systems = set(kb.typed.patient_context.icd10_systems)
    return [str(c.get("code")).replace(".", "").upper() for c in codings(concept)
            if as_str(c.get("system")) in systems and as_str(c.get("code"))]


def _condition_label(ref: str, r: JSON) -> str:
    codes = [str(c.get("code")) for c in codings(r.get("code")) if as_str(c.get("code"))]
    return condition_label(concept_texts(r.get("code")), codes, ref)


@dataclass(frozen=True)
class KidneyStates:
    dialysis: tuple[ConditionEvidence, ...]     # evidence that counts
    transplant: tuple[ConditionEvidence, ...]
    superseded: tuple[ConditionEvidence, ...]   # ESRD evidence set aside by a transplant


def _condition_time(r: JSON, tz: Any) -> datetime | None:
    """A Condition is dated by onset[x], else recordedDate (clinical-rules section 2)."""
    period = as_dict(r.get("onsetPeriod"))
    return (parse_instant(r.get("onsetDateTime"), tz) or parse_instant(period.get("start"), tz)
            or parse_instant(r.get("recordedDate"), tz))


def _procedure_time(r: JSON, tz: Any) -> datetime | None:
    period = as_dict(r.get("performedPeriod"))
    return (parse_instant(r.get("performedDateTime"), tz)
            or parse_instant(period.get("end"), tz)
            or parse_instant(period.get("start"), tz))


def kidney_states(resources: Iterable[Resource], check_time: datetime, kb: Knowledge
                  ) -> KidneyStates:
    """Dialysis/ESRD Conditions (status respected), dialysis Procedures within
    ``dialysis.procedure_max_age_days`` or ongoing (``ongoing_statuses``, or a performedPeriod
    without an end), and a kidney transplant, after which ESRD and dialysis Conditions no
    longer count and a dialysis Procedure counts only when performed after it
    (clinical-rules section 2).

    choice: a Procedure without a date, or with a status in
    ``dialysis.procedure_excluded_statuses``, does not count (its time cannot be judged)."""
    pc = kb.typed.patient_context
    spec, tx = pc.dialysis, pc.kidney_transplant
    snomed = kb.typed.recognition.snomed_system
    icd = {c.replace(".", "") for c in spec.icd10}
    tx_icd = {c.replace(".", "") for c in tx.icd10}
    tz = check_time.tzinfo
    conditions: list[ConditionEvidence] = []
    procedures: list[tuple[ConditionEvidence, datetime]] = []
    transplants: list[tuple[ConditionEvidence, datetime | None]] = []
    for ref, r in resources:
        rtype = r.get("resourceType")
        text = " ".join(concept_texts(r.get("code"))).lower()
        names_tx = (set(_icd10(r.get("code"), kb)) & tx_icd
                    or has_code(r.get("code"), snomed, tx.snomed)
                    or any(w in text for w in tx.words))
        if rtype == "Condition":
            if not condition_counts(r, kb):
                continue
            if names_tx:
                transplants.append((ConditionEvidence(
                    ref, transplant_condition_text(_condition_label(ref, r))),
                    _condition_time(r, tz)))
            elif (set(_icd10(r.get("code"), kb)) & icd
                    or has_code(r.get("code"), snomed, spec.snomed)
                    or any(w in text for w in spec.words)):
                conditions.append(ConditionEvidence(ref, _condition_label(ref, r)))
        elif rtype == "Procedure":
            status = as_str(r.get("status"))
            if status in spec.procedure_excluded_statuses:
                continue
            if names_tx:
                transplants.append((ConditionEvidence(
                    ref, transplant_procedure_text(ref)), _procedure_time(r, tz)))
                continue
            if not (has_code(r.get("code"), snomed, spec.procedure_snomed)
                    or any(w in text for w in spec.procedure_words)):
                continue
            period = as_dict(r.get("performedPeriod"))
            ongoing = status in spec.ongoing_statuses or (
                bool(period) and period.get("start") is not None and period.get("end") is None)
            at = _procedure_time(r, tz)
            if ongoing:
                procedures.append((ConditionEvidence(
                    ref, dialysis_procedure_text(ref, at, True)), at or check_time))
            elif at is not None and elapsed_days(at, check_time) <= spec.procedure_max_age_days:
                procedures.append((ConditionEvidence(
                    ref, dialysis_procedure_text(ref, at, False)), at))
    if not transplants:
        return KidneyStates(tuple(conditions) + tuple(e for e, _ in procedures), (), ())
    dated = [t for _, t in transplants if t is not None]
    latest = max(dated) if len(dated) == len(transplants) else None
    kept = [e for e, at in procedures if latest is None or at > latest]
    superseded = conditions + [e for e, at in procedures if latest is not None and at <= latest]
    return KidneyStates(tuple(kept), tuple(e for e, _ in transplants), tuple(superseded))


def ckd_stage_value(resources: Iterable[Resource], check_time: datetime, kb: Knowledge
                    ) -> RenalCandidate | None:
    """A recorded CKD stage as the renal value, at the top of the stage's eGFR range, when
    there is no usable renal value (clinical-rules section 2); the most restrictive stage
    recorded. Never stale."""
    spec = _spec(kb).ckd_stage_ml_min
    icd = {k.replace(".", "").upper(): v for k, v in spec.icd10.items()}
    snomed_values = {str(k): v for k, v in spec.snomed.items()}
    snomed = kb.typed.recognition.snomed_system
    best: tuple[Fraction, str, str] | None = None
    for ref, r in resources:
        if r.get("resourceType") != "Condition" or not condition_counts(r, kb):
            continue
        values = [icd[c] for c in _icd10(r.get("code"), kb) if c in icd]
        values += [v for code, v in snomed_values.items()
                   if has_code(r.get("code"), snomed, [code])]
        if values and (best is None or min(values) < best[0]):
            best = (min(values), ref, _condition_label(ref, r))
    if best is None:
        return None
    value, ref, label = best
    rounded = round_renal(value, _spec(kb).round_to)
    return RenalCandidate("ckd-stage", value, rounded, band_of(rounded, _spec(kb)), check_time,
                          False, (ref,), ckd_stage_text(label, rounded))


def ckd_evidence(resources: Iterable[Resource], kb: Knowledge) -> tuple[ConditionEvidence, ...]:
    """Chronic kidney disease: ICD-10-CM codes under ``ckd.icd10_prefix`` or text naming it
    (``ckd.words``)."""
    spec = kb.typed.patient_context.ckd
    out = []
    for ref, r in resources:
        if r.get("resourceType") != "Condition" or not condition_counts(r, kb):
            continue
        text = " ".join(concept_texts(r.get("code"))).lower()
        if any(c.startswith(spec.icd10_prefix) for c in _icd10(r.get("code"), kb)) or any(
            w in text for w in spec.words
        ):
            out.append(ConditionEvidence(ref, _condition_label(ref, r)))
    return tuple(out)
