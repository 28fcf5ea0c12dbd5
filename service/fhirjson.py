"""Defensive readers for normalised FHIR JSON.

Context resources are read from JSON, not through the models, so every reader here accepts any
JSON value and answers None or an empty list when the shape is wrong; it never raises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from fractions import Fraction
from functools import lru_cache
from typing import Any

JSON = dict[str, Any]


def copy_json(value: Any) -> Any:
    """A deep copy of parsed JSON (dicts, lists and immutable scalars), several times faster
    than copy.deepcopy, which also handles shared and cyclic objects that JSON cannot hold."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def as_dict(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def dicts(value: Any) -> list[JSON]:
    return [v for v in as_list(value) if isinstance(v, dict)]


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def as_number(value: Any) -> Fraction | None:
    """An exact number from a JSON number (floats by their shortest repr); None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return _float_fraction(value)
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
        return Fraction(value.strip()) if math.isfinite(f) and _DECIMAL.match(value) else None
    return None


_DECIMAL = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")


@lru_cache(maxsize=4096)
def _float_fraction(value: float) -> Fraction:
    """A float's exact number by its shortest repr, once per value (a Fraction is immutable):
    reading the text costs 4 us, and the same doses and values come in every check."""
    return Fraction(repr(value))


def codings(concept: Any) -> list[JSON]:
    """The codings of a CodeableConcept whose system, code and display (where present) are
    strings; a coding with another JSON type there cannot be read and is left out."""
    if not isinstance(concept, dict):
        return []
    raw = concept.get("coding")
    if raw is None:
        return []
    return [c for c in (raw if isinstance(raw, list) else [raw])
            if isinstance(c, dict) and isinstance(c.get("system", ""), str)
            and isinstance(c.get("code", ""), str) and isinstance(c.get("display", ""), str)]


def concept_texts(concept: Any) -> list[str]:
    """The text and every coding display of a CodeableConcept."""
    if not isinstance(concept, dict):
        return []
    text = as_str(concept.get("text"))
    out = [text] if text is not None else []
    for coding in codings(concept):
        display = as_str(coding.get("display"))
        if display is not None:
            out.append(display)
    return out


def has_code(concept: Any, system: str | None, codes: Any) -> bool:
    """A coding of ``concept`` has one of ``codes`` (a list or set of strings; one string is
    one code) and, unless ``system`` is None, that system."""
    if isinstance(codes, str):
        codes = (codes,)  # never a substring test
    if not isinstance(concept, dict):
        return False
    raw = concept.get("coding")
    if raw is None:
        return False
    # the codings() test (system, code, display strings where present) made only on a coding
    # whose code matches: has_code is the most called reader (65 times an order-sign call)
    for coding in raw if isinstance(raw, list) else (raw,):
        if not isinstance(coding, dict):
            continue
        code = coding.get("code")
        if not code or not isinstance(code, str) or code not in codes or not code.strip():
            continue
        if isinstance(coding.get("system", ""), str) \
                and isinstance(coding.get("display", ""), str) \
                and (system is None or coding.get("system") == system):
            return True
    return False


def walk(value: Any) -> Iterator[Any]:
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


# --- FHIR date and dateTime -------------------------------------------------------------

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})"
    r"(T(?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


# choice: dates outside these years are not clinical dates (and date arithmetic near year 1 or
# 9999 overflows), so they read as unusable rather than as a time.
MIN_YEAR, MAX_YEAR = 1000, 9000


class DateRange:
    """A FHIR date or dateTime as the range of instants it may mean (a partial date is wide)."""

    __slots__ = ("low", "high", "precision")

    def __init__(self, low: datetime, high: datetime, precision: str):
        self.low = low
        self.high = high
        self.precision = precision


def parse_datetime_range(value: Any, default_tz: tzinfo | None = None) -> DateRange | None:
    """Read a FHIR date/dateTime/instant. A date without a time means 00:00; a value without an
    offset is read in ``default_tz`` (UTC when that is None). None when it is not a date."""
    text = as_str(value)
    if text is None:
        return None
    read = _read_datetime(text, default_tz)
    return None if read is None else DateRange(*read)


@lru_cache(maxsize=8192)
def _read_datetime(text: str, default_tz: tzinfo | None) -> tuple[datetime, datetime, str] | None:
    """parse_datetime_range's (low, high, precision), once per text and zone (datetimes are
    immutable; each caller gets a DateRange of its own): a check reads the same dates in
    several places, about 4 us each (bench/cpu_sign.py)."""
    m = _DATE_RE.match(text.strip())
    if not m:
        return None
    tz: tzinfo = default_tz or UTC
    if m.group("tz"):
        z = m.group("tz")
        if z == "Z":
            tz = UTC
        else:
            sign = 1 if z[0] == "+" else -1
            hours, minutes = int(z[1:3]), int(z[4:6])
            if hours > 23 or minutes > 59:
                return None
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    year = int(m.group("y"))
    if not MIN_YEAR <= year <= MAX_YEAR:
        return None
    try:
        if m.group("m") is None:
            low = datetime(year, 1, 1, tzinfo=tz)
            return low, datetime(year + 1, 1, 1, tzinfo=tz), "year"
        month = int(m.group("m"))
        if m.group("d") is None:
            low = datetime(year, month, 1, tzinfo=tz)
            nxt = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
            return low, nxt, "month"
        day = int(m.group("d"))
        if m.group("H") is None:
            low = datetime(year, month, day, tzinfo=tz)
            return low, low + timedelta(days=1), "day"
        frac_s = m.group("f") or ""
        micro = int((frac_s[1:] + "000000")[:6]) if frac_s else 0
        low = datetime(
            year, month, day, int(m.group("H")), int(m.group("M")), int(m.group("S") or 0),
            micro, tzinfo=tz,
        )
        return low, low, "instant"
    except (ValueError, OverflowError):
        return None


def parse_instant(value: Any, default_tz: tzinfo | None = None) -> datetime | None:
    """The start of a FHIR date/dateTime as an aware datetime (00:00 for a bare date)."""
    r = parse_datetime_range(value, default_tz)
    return r.low if r else None
