"""A Dosage's Timing and rates read: administrations per day, durations, caps and rates per day
(clinical-rules sections 1 and 6). Nothing here raises on odd input: what cannot be read is
None, or a reason the order reader puts on the line."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from fractions import Fraction
from typing import Any

from ..clinical.time import elapsed_days
from ..clinical.units import period_days, period_word
from ..fhirjson import (
    JSON,
    as_dict,
    as_list,
    as_number,
    as_str,
    codings,
    parse_datetime_range,
    parse_instant,
)
from ..knowledge import Knowledge

_PER = re.compile(r"^(\d+(?:\.\d+)?)?\s*([a-z]+)$")
"""The period of a rate unit's denominator: "hr", "24 h", "day"."""

ToMg = Callable[[JSON], Fraction | None]
"""A Quantity in mg (a mass, or a count or volume through the product's strength), or None."""


def _period_days(value: Any, unit: Any, kb: Knowledge) -> Fraction | None:
    return period_days(as_number(value), as_str(unit), kb)


def duration_days(repeat: JSON, kb: Knowledge, tz: Any) -> Fraction | None:
    bd = as_dict(repeat.get("boundsDuration"))
    if bd:
        unit = as_str(bd.get("code")) or as_str(bd.get("unit"))
        return _period_days(bd.get("value"), unit, kb)
    bp = as_dict(repeat.get("boundsPeriod"))
    start = parse_instant(bp.get("start"), tz)
    end_r = parse_datetime_range(bp.get("end"), tz)
    if start is not None and end_r is not None and end_r.high > start:
        # choice: a bounds end given as a bare date includes that whole day.
        end = end_r.high if end_r.precision != "instant" else end_r.low
        return elapsed_days(start, end)
    return None


def bounds_end(value: Any, tz: Any) -> datetime | None:
    """A boundsPeriod or effectivePeriod end: a bare date includes that whole day."""
    r = parse_datetime_range(value, tz)
    if r is None:
        return None
    return r.high if r.precision != "instant" else r.low


def administrations_per_day(
    timing: JSON, kb: Knowledge
) -> tuple[Fraction | None, bool, str | None]:
    """(administrations per day, single dose, why unreadable)."""
    repeat = as_dict(timing.get("repeat"))
    freq_raw = repeat.get("frequencyMax", repeat.get("frequency"))
    frequency = as_number(freq_raw)
    if freq_raw is not None and (frequency is None or frequency <= 0):
        return None, False, "the frequency is not a positive number"
    count = as_number(repeat.get("count"))
    per_day: Fraction | None = None
    periods = [p for p in (repeat.get("period"), repeat.get("periodMax")) if p is not None]
    if periods:
        days = [_period_days(p, repeat.get("periodUnit"), kb) for p in periods]
        if any(d is None for d in days):
            return None, False, "the timing period or its unit cannot be read"
        shortest = min(d for d in days if d is not None)
        per_day = (frequency or Fraction(1)) / shortest
    elif frequency is not None and count == 1 and frequency == 1:
        return None, True, None
    if frequency is None and count == 1 and not periods:
        return None, True, None
    # clinical-rules section 1: repeat, else timing.code, else the count of when/timeOfDay
    # entries. Named times with a frequency only say when in the period each dose is given
    # (once a week in the morning is once a week, not once a day).
    if per_day is None:
        per_day = _timing_code(timing, kb)
    when_count = len(as_list(repeat.get("when"))) + len(as_list(repeat.get("timeOfDay")))
    if per_day is None and when_count:
        per_day = Fraction(when_count)
    if per_day is None:
        return None, False, "no frequency, timing code or times of day are given"
    return per_day, False, None


def _timing_code(timing: JSON, kb: Knowledge) -> Fraction | None:
    code = as_dict(timing.get("code"))
    candidates = [as_str(c.get("code")) for c in codings(code)] + [as_str(code.get("text"))]
    for c in candidates:
        if c and c.strip().upper() in kb.timing_codes:
            return kb.timing_codes[c.strip().upper()]
    return None


def _ratio_days(den: JSON, kb: Knowledge) -> Fraction | None:
    """The days of a Ratio's denominator (a time Quantity, its unit a code or a word)."""
    return _period_days(den.get("value", 1), period_word(
        as_str(den.get("code")) or as_str(den.get("unit")), kb), kb)


def per_day_amount(ratio: JSON, to_mg: ToMg, kb: Knowledge) -> tuple[Fraction, Fraction] | None:
    """A maxDosePerPeriod Ratio as (mg per day, days of its period): the amount divided by the
    days of its period (clinical-rules section 1: 140 mg per week is 20 mg a day; a cap over
    a day or less is scaled to 24 h)."""
    amount = to_mg(as_dict(ratio.get("numerator")))
    days = _ratio_days(as_dict(ratio.get("denominator")), kb)
    if amount is None or days is None:
        return None
    return amount / days, days


def rate_mg_day(rate: JSON, to_mg: ToMg, kb: Knowledge) -> Fraction | None:
    """A rate (``{"rateRatio": ...}`` or ``{"rateQuantity": ...}``) in mg per day."""
    if "rateRatio" in rate:
        ratio = as_dict(rate["rateRatio"])
        amount = to_mg(as_dict(ratio.get("numerator")))
        days = _ratio_days(as_dict(ratio.get("denominator")), kb)
        return amount / days if amount is not None and days else None
    q = as_dict(rate.get("rateQuantity"))
    # the UCUM code, else the unit text ("mcg/hr", "microgram/hour": clinical-rules section 6)
    for unit_text in (as_str(q.get("code")), as_str(q.get("unit"))):
        if not unit_text or "/" not in unit_text:
            continue
        mass_unit, per = unit_text.split("/", 1)
        m = _PER.match(per.strip().lower())
        if not m:
            continue
        per_value = Fraction(m.group(1)) if m.group(1) else Fraction(1)
        amount = to_mg({"value": q.get("value"), "unit": mass_unit.strip()})
        days = period_days(per_value, period_word(m.group(2), kb), kb)
        if amount is not None and days:
            return amount / days
    return None

