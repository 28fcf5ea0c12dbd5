"""Writing numbers for people (clinical-rules section 10): no trailing zeros, a leading zero,
"mg" and "micrograms", never "ug"."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from functools import lru_cache


@lru_cache(maxsize=4096, typed=True)
def fmt(value: Fraction | int | float, places: int | None = None) -> str:
    """5 -> "5", 53.3333 -> "53.3", 0.5 -> "0.5", 0.125 -> "0.13"; no trailing zeros.

    Any size is written exactly to ``places`` (no exponent, no precision error), and a value
    too small for ``places`` keeps two significant digits rather than reading as "0".
    """
    v = Fraction(value) if not isinstance(value, float) else Fraction(repr(value))
    if places is None:
        places = 1 if abs(v) >= 10 else 2
    if v != 0 and abs(v) < Fraction(1, 2 * 10**places):
        # 0.0001 micrograms must not be written as "0": keep two significant digits
        places = max(places, -_exponent(abs(v)) + 1)
    digits = len(str(abs(v.numerator) // v.denominator)) + places + 5
    with localcontext() as ctx:
        ctx.prec = max(28, digits)
        d = Decimal(v.numerator) / Decimal(v.denominator)
        q = d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = format(q, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in {"-0", ""}:
        text = "0"
    return text


def fmt_beside(value: Fraction, other: Fraction) -> str:
    """``value`` written so that it does not read the same as ``other`` when they differ
    (80.04 mg beside an 80 mg limit is "80.04", not "80")."""
    text = fmt(value)
    places = 1 if abs(value) >= 10 else 2
    while value != other and text == fmt(other) and places < 6:
        places += 1
        text = fmt(value, places)
    return text


def _exponent(v: Fraction) -> int:
    """The power of ten of the leading digit of a positive value (0.004 -> -3)."""
    e = len(str(v.numerator)) - len(str(v.denominator))
    while Fraction(10) ** e > v:
        e -= 1
    while Fraction(10) ** (e + 1) <= v:
        e += 1
    return e


def mg(value: Fraction | int) -> str:
    return f"{fmt(value)} mg"


def mg_day(value: Fraction | int) -> str:
    return f"{fmt(value)} mg/day"


def micrograms(value: Fraction | int) -> str:
    return f"{fmt(value)} micrograms"


def times_per_day(per_day: Fraction) -> str:
    names = {1: "once a day", 2: "twice a day", 3: "three times a day", 4: "four times a day"}
    if per_day.denominator == 1 and int(per_day) in names:
        return names[int(per_day)]
    if per_day < 1:
        every = 1 / per_day
        return f"once every {fmt(every)} days"
    return f"{fmt(per_day)} times a day"


def floor_to_step(value: Fraction, step: Fraction) -> Fraction:
    """Round down to a multiple of ``step`` (a dose that can be given)."""
    if step <= 0:
        return value
    return (value // step) * step


# --- units as people read them (clinical-rules section 10) ----------------------------------

_PEOPLE_MASS = {"mg": "mg", "g": "g", "ug": "micrograms"}
_PEOPLE_PER = {"d": "day", "h": "hour", "min": "minute", "wk": "week"}
_COUNT_WORDS = {"tbl": "tablet", "tab": "tablet", "tabs": "tablet", "tablet": "tablet",
                "tablets": "tablet", "pill": "pill", "pills": "pill", "packet": "packet",
                "packets": "packet"}


def unit_for_people(unit: str, kind: tuple[str, str] | None, number: Fraction | None) -> str:
    """A dose unit as written (``unit``, perhaps ``head/per``) in words: "micrograms" for ug,
    count units as words ("2 tablets"), a per-time unit spelled out ("micrograms/day").
    ``kind``: what the unit before any "/" is (service/clinical/units.py), None when unknown
    (the unit stays as written)."""
    head, sep, per = unit.partition("/")
    if kind is None:
        return unit
    if kind[0] == "mass":
        word = _PEOPLE_MASS[kind[1]]
    elif kind[0] == "volume":
        word = "mL"
    else:
        bare = head.strip().strip("{}").lower()
        word = _COUNT_WORDS.get(bare, bare)
        if word in {"tablet", "pill", "packet"} and number != 1:
            word += "s"
    if sep:
        return f"{word}/{_PEOPLE_PER.get(per.strip(), per.strip())}"
    return word
