"""Age in completed years (clinical-rules section 2): dates in, whole years out; a partial
birth date is a range of possible birth days, so a range of ages."""

from __future__ import annotations

from datetime import date


def completed_years(born: date, on: date) -> int:
    """Birthdays passed from ``born`` to ``on``."""
    years = on.year - born.year
    if (on.month, on.day) < (born.month, born.day):
        years -= 1
    return years


def age_range_years(earliest_birth: date, latest_birth: date, on: date) -> tuple[int, int] | None:
    """(youngest, oldest) completed years on ``on`` of someone born between the two days; None
    when even the earliest is after ``on``."""
    if earliest_birth > on:
        return None
    return completed_years(min(latest_birth, on), on), completed_years(earliest_birth, on)
