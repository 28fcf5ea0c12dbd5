"""Patient facts: age from full or partial birth dates, sex (clinical-rules section 2)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from fractions import Fraction

from .facts import AgeFacts, PatientFacts
from .fhirjson import JSON, as_str, parse_datetime_range


def completed_years(born: date, on: date) -> int:
    years = on.year - born.year
    if (on.month, on.day) < (born.month, born.day):
        years -= 1
    return years


def age_at(birth_date: object, at: datetime) -> AgeFacts | None:
    """Completed years at ``at``; a partial birth date gives the youngest and oldest ages."""
    r = parse_datetime_range(birth_date, at.tzinfo)
    if r is None:
        return None
    on = at.date()
    earliest = r.low.date()
    latest = (r.high - timedelta(microseconds=1)).date() if r.precision != "instant" else earliest
    if earliest > on:
        return None
    oldest = completed_years(earliest, on)
    youngest = completed_years(min(latest, on), on)
    return AgeFacts(Fraction(youngest), Fraction(oldest), partial=r.precision in {"year", "month"})


def patient_facts(patient: JSON, ref: str, at: datetime) -> PatientFacts:
    gender = as_str(patient.get("gender"))
    return PatientFacts(
        ref=ref,
        age=age_at(patient.get("birthDate"), at),
        sex=gender if gender in {"male", "female", "other", "unknown"} else None,
    )
