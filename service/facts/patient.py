"""Patient facts read from the record (clinical-rules section 2): age from a full or partial
birth date, sex, the newest fresh weight and height, pregnancy, breastfeeding and alcohol use
disorder; and the readers of context results and conditions the kidney facts share (result
time, usable status, LOINC, a condition that counts).

- ``patient_facts(patient, ref, at, context, check_time, kb) -> PatientFacts``
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, tzinfo
from fractions import Fraction
from typing import Any

from ..clinical.age import age_range_years
from ..clinical.time import elapsed_days
from ..fhirjson import (
    JSON,
    as_dict,
    as_number,
    as_str,
    codings,
    concept_texts,
    has_code,
    parse_datetime_range,
    parse_instant,
)
from ..knowledge import Knowledge
from ..knowledge.sections import Height
from ..model import AgeFacts, PatientFacts


def age_at(birth_date: object, at: datetime) -> AgeFacts | None:
    """Completed years at ``at``; a partial birth date gives the youngest and oldest ages."""
    r = parse_datetime_range(birth_date, at.tzinfo)
    if r is None:
        return None
    earliest = r.low.date()
    latest = (r.high - timedelta(microseconds=1)).date() if r.precision != "instant" else earliest
    years = age_range_years(earliest, latest, at.date())
    if years is None:
        return None
    return AgeFacts(Fraction(years[0]), Fraction(years[1]),
                    partial=r.precision in {"year", "month"})


def patient_facts(
    patient: JSON,
    ref: str,
    at: datetime,
    context: Iterable[Resource],
    check_time: datetime | None,
    kb: Knowledge,
) -> PatientFacts:
    """Age at ``at`` (the start of the order); weight, height and pregnancy from ``context``
    (``(ref, resource)`` pairs), judged for freshness at ``check_time`` (None: ``at``).
    Freshness limits: ``patient_context.weight`` and ``.height`` (``child_max_age_days``
    below ``weight.child_age_below`` years, else ``adult_max_age_days``)."""
    now = check_time or at
    resources = list(context)
    gender = as_str(patient.get("gender"))
    age = age_at(patient.get("birthDate"), at)
    pc = kb.typed.patient_context
    child = age is None or age.low_years < pc.weight.child_age_below
    weight = _measure(resources, pc.weight, kb.typed.units.weight_kg_per_unit, now, child, kb)
    height = _measure(resources, pc.height, kb.typed.units.height_cm_per_unit, now, child, kb)
    return PatientFacts(
        ref=ref,
        age=age,
        sex=gender if gender in {"male", "female", "other", "unknown"} else None,
        weight_kg=weight[0] if weight else None,
        weight_ref=weight[1] if weight else None,
        weight_at=weight[2] if weight else None,
        height_cm=height[0] if height else None,
        height_ref=height[1] if height else None,
        height_at=height[2] if height else None,
        pregnancy_refs=pregnancy_refs(resources, now, kb),
        breastfeeding_refs=breastfeeding_refs(resources, now, kb),
        alcohol_refs=alcohol_refs(resources, kb),
    )


# --- observations and conditions in the context ------------------------------------------

Resource = tuple[str, JSON]
"""(the reference used in output, the resource JSON)."""


def observation_time(obs: JSON, tz: tzinfo | None) -> datetime | None:
    """``effective[x]``, else ``issued`` (clinical-rules section 2).

    choice: of an effectivePeriod the start is used (the older end, so freshness is judged
    conservatively)."""
    for key in ("effectiveDateTime", "effectiveInstant"):
        t = parse_instant(obs.get(key), tz)
        if t is not None:
            return t
    period = as_dict(obs.get("effectivePeriod"))
    t = parse_instant(period.get("start"), tz) or parse_instant(period.get("end"), tz)
    return t or parse_instant(obs.get("issued"), tz)


def usable_result(obs: JSON, kb: Knowledge) -> bool:
    return as_str(obs.get("status")) in kb.typed.patient_context.usable_result_statuses


def has_loinc(obs: JSON, codes: Any, kb: Knowledge) -> bool:
    return has_code(obs.get("code"), kb.typed.patient_context.loinc_system, codes)


def _measure(
    resources: Iterable[Resource], spec: Height, per_unit: Mapping[str, Fraction], at: datetime,
    child: bool, kb: Knowledge,
) -> tuple[Fraction, str, datetime] | None:
    """The newest usable result of a weight or height (``spec``) within its freshness for a
    child or an adult, converted by ``per_unit``."""
    max_days = spec.child_max_age_days if child else spec.adult_max_age_days
    best: tuple[Fraction, str, datetime] | None = None
    for ref, obs in resources:
        if obs.get("resourceType") != "Observation" or not has_loinc(obs, spec.loinc, kb):
            continue
        if not usable_result(obs, kb):
            continue
        t = observation_time(obs, at.tzinfo)
        if t is None or elapsed_days(t, at) > max_days:
            continue
        q = as_dict(obs.get("valueQuantity"))
        value = as_number(q.get("value"))
        unit = as_str(q.get("code")) or as_str(q.get("unit"))
        if value is None or value <= 0 or unit is None:
            continue
        factor = per_unit.get(unit) if unit in per_unit else per_unit.get(unit.lower())
        if factor is None:
            continue
        if best is None or t > best[2]:
            best = (value * factor, ref, t)
    return best


def pregnancy_refs(resources: Iterable[Resource], at: datetime, kb: Knowledge
                   ) -> tuple[str, ...]:
    """An Observation coded ``pregnancy.observation_loinc`` valued ``pregnant_snomed`` within
    ``observation_max_age_days``, or a Condition that counts coded ``pregnant_snomed`` or whose
    text names pregnancy (``words``) (clinical-rules section 2)."""
    spec = kb.typed.patient_context.pregnancy
    snomed = kb.typed.recognition.snomed_system
    out: list[str] = []
    for ref, r in resources:
        if r.get("resourceType") == "Observation":
            if not has_loinc(r, spec.observation_loinc, kb) or not usable_result(r, kb):
                continue
            if not has_code(r.get("valueCodeableConcept"), snomed, spec.pregnant_snomed):
                continue
            t = observation_time(r, at.tzinfo)
            if t is not None and elapsed_days(t, at) <= spec.observation_max_age_days:
                out.append(ref)
        elif r.get("resourceType") == "Condition" and condition_counts(r, kb):
            texts = " ".join(concept_texts(r.get("code"))).lower()
            if has_code(r.get("code"), snomed, spec.pregnant_snomed) or any(
                w in texts for w in spec.words
            ):
                out.append(ref)
    return tuple(out)


def _icd10_codes(concept: Any, kb: Knowledge) -> list[str]:
    """ICD-10(-CM) codes of a concept, upper case, without the dot."""
    systems = set(kb.typed.patient_context.icd10_systems)
    return [str(c.get("code")).replace(".", "").strip().upper() for c in codings(concept)
            if as_str(c.get("system")) in systems and as_str(c.get("code"))]


def breastfeeding_refs(resources: Iterable[Resource], at: datetime, kb: Knowledge
                       ) -> tuple[str, ...]:
    """A Condition that counts, or an Observation within ``breastfeeding.observation_max_age_days``,
    coded as breastfeeding or whose text names it (clinical-rules section 2).

    choice: an Observation counts by its code or its value; a value that is false or whose
    text holds one of ``breastfeeding.negation_words`` does not count."""
    spec = kb.typed.patient_context.breastfeeding
    snomed = kb.typed.recognition.snomed_system
    icd = {c.replace(".", "").upper() for c in spec.icd10}
    negations = spec.negation_words
    out: list[str] = []
    for ref, r in resources:
        rtype = r.get("resourceType")
        code_text = " ".join(concept_texts(r.get("code"))).lower()
        coded = bool(set(_icd10_codes(r.get("code"), kb)) & icd) or has_code(
            r.get("code"), snomed, spec.snomed)
        if rtype == "Condition" and condition_counts(r, kb):
            if coded or any(w in code_text for w in spec.words):
                out.append(ref)
        elif rtype == "Observation" and usable_result(r, kb):
            t = observation_time(r, at.tzinfo)
            if t is None or elapsed_days(t, at) > spec.observation_max_age_days:
                continue
            value = r.get("valueBoolean")
            value_text = " ".join(concept_texts(r.get("valueCodeableConcept")) + [
                as_str(r.get("valueString")) or ""]).lower()
            if value is False or any(n in f" {value_text}" for n in negations):
                continue
            value_coded = has_code(r.get("valueCodeableConcept"), snomed, spec.snomed)
            if coded or value_coded or any(w in code_text + " " + value_text
                                           for w in spec.words):
                out.append(ref)
    return tuple(out)


def alcohol_refs(resources: Iterable[Resource], kb: Knowledge) -> tuple[str, ...]:
    """An active Condition ICD-10-CM F10.* other than in remission, a SNOMED alcohol use
    disorder code, or text naming it (clinical-rules section 2)."""
    spec = kb.typed.patient_context.alcohol_use_disorder
    snomed = kb.typed.recognition.snomed_system
    prefix = spec.icd10_prefix.replace(".", "").upper()
    remission = {c.replace(".", "").upper() for c in spec.icd10_remission}
    out: list[str] = []
    for ref, r in resources:
        if r.get("resourceType") != "Condition" or not condition_counts(r, kb):
            continue
        codes = _icd10_codes(r.get("code"), kb)
        text = " ".join(concept_texts(r.get("code"))).lower()
        if any(c.startswith(prefix) and c not in remission for c in codes) or has_code(
                r.get("code"), snomed, spec.snomed) or (
                not codes and "remission" not in text
                and any(w in text for w in spec.words)):
            out.append(ref)
    return tuple(out)


def condition_counts(condition: JSON, kb: Knowledge) -> bool:
    """clinicalStatus active, recurrence or relapse (or absent); verificationStatus not
    refuted or entered-in-error (clinical-rules section 2)."""
    spec = kb.typed.patient_context
    clinical = [as_str(c.get("code")) for c in codings(condition.get("clinicalStatus"))]
    if clinical and not any(c in spec.condition_active_statuses for c in clinical):
        return False
    verification = [as_str(c.get("code")) for c in codings(condition.get("verificationStatus"))]
    return not any(v in spec.condition_excluded_verification for v in verification)
