"""service/clinical/age.py and service/clinical/time.py: completed years, the age range of a
partial birth date, exact elapsed days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from fractions import Fraction as F

from service.clinical.age import age_range_years, completed_years
from service.clinical.time import elapsed_days


def test_completed_years_count_birthdays_passed() -> None:
    assert completed_years(date(1960, 3, 1), date(2026, 2, 28)) == 65
    assert completed_years(date(1960, 3, 1), date(2026, 3, 1)) == 66
    assert completed_years(date(2000, 2, 29), date(2026, 2, 28)) == 25


def test_a_partial_birth_date_gives_a_range() -> None:
    # born some day of 1960, seen on 2026-06-15: 65 if born after 15 June, else 66
    assert age_range_years(date(1960, 1, 1), date(1960, 12, 31), date(2026, 6, 15)) == (65, 66)
    assert age_range_years(date(1960, 5, 1), date(1960, 5, 1), date(2026, 6, 15)) == (66, 66)
    # a birth range reaching past the day seen: the youngest is 0
    assert age_range_years(date(2026, 1, 1), date(2026, 12, 31), date(2026, 6, 15)) == (0, 0)
    assert age_range_years(date(2027, 1, 1), date(2027, 12, 31), date(2026, 6, 15)) is None


def test_elapsed_days_are_exact() -> None:
    start = datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert elapsed_days(start, start + timedelta(days=90)) == 90
    assert elapsed_days(start, start + timedelta(hours=36)) == F(3, 2)
    assert elapsed_days(start + timedelta(microseconds=1), start) == F(-1, 86_400_000_000)
