"""Wording for people: numbers written as clinical-rules section 10 says (no trailing zeros,
a leading zero, "mg" and "micrograms", never "ug"), and the sentences the facts and rules
write (the kidney function below)."""

from __future__ import annotations

from datetime import datetime
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


# --- kidney function (clinical-rules sections 2 and 5) --------------------------------------
# The sentences of the kidney facts (service/facts/renal.py) and of the renal rules; the
# numbers come in already computed (service/clinical/renal.py) and read from the knowledge.

def day(at: datetime) -> str:
    """A result's date as the details write it (2026-11-20)."""
    return at.date().isoformat()


_FRACTION_WORDS = {Fraction(1, 2): "half", Fraction(2, 3): "two thirds",
                   Fraction(1, 3): "one third"}


def renal_cap_text(band: str, cap_mg_day: Fraction, fraction: Fraction | None,
                   of_mg_day: Fraction, of_what: str | None = None) -> str:
    """"cap 40 mg/day (half of 80 mg/day[, ``of_what``])", "cap 5 mg/day" (severe band) or
    "about 5 mg/day" (dialysis)."""
    if fraction is not None:
        words = _FRACTION_WORDS.get(fraction, f"{fraction.numerator}/{fraction.denominator}")
        beside = f", {of_what}" if of_what else ""
        return f"cap {fmt(cap_mg_day)} mg/day ({words} of {fmt(of_mg_day)} mg/day{beside})"
    if band == "esrd":
        return f"about {fmt(cap_mg_day)} mg/day"
    return f"cap {fmt(cap_mg_day)} mg/day"


_RENAL_NOTES = {
    "status": "{ref} not used: result status {status!r}",
    "no-date": "{ref} not used: the result has no date",
    "too-old": "{ref} not used: the result of {day} is older than {days} days",
    "unreadable": "{ref} not used: the value cannot be read",
    "child-crcl": "{ref} not used: under {adult_from} a reported eGFR or the bedside Schwartz "
                  "estimate is used",
    "creatinine-unit": "{ref} not used: creatinine unit {unit!r} is not known",
    "creatinine-bound": "{ref} not used: creatinine {written} gives only an upper bound of the "
                        "clearance",
    "creatinine-implausible": "{ref} not used: creatinine {written} {unit} is outside the "
                              "plausible range (a typing or unit error?)",
    "rate-unit": "{ref} not used: unit {unit!r} is not mL/min",
    "rate-implausible": "{ref} not used: {written} mL/min is outside the plausible range (a "
                        "typing or unit error?)",
    "age-unknown": "no kidney function estimated from creatinine: the age is unknown",
    "no-weight": "Cockcroft-Gault not computed: no recent weight (CKD-EPI 2021 used)",
    "not-computed": "{label} not computed: {why}",
    "too-young": "no eGFR estimated from creatinine below {age_from} year of age",
    "no-height": "bedside Schwartz not computed: no height within {days} days",
}


def renal_note(kind: str, **values: object) -> str:
    """Why a kidney result was not used or no value was estimated (``RenalFacts.notes``);
    numbers are written for people."""
    return _RENAL_NOTES[kind].format(**{k: fmt(v) if isinstance(v, Fraction) else v
                                        for k, v in values.items()})


def creatinine_text(written: str, mg_dl: Fraction, as_mg_dl: bool) -> str:
    """"1.2 mg/dL", or "110 micromol/L = 1.24 mg/dL"."""
    if as_mg_dl:
        return f"{written} mg/dL"
    return f"{written} micromol/L = {fmt(mg_dl, 2)} mg/dL"


def reported_renal_text(egfr: bool, written: str, at: datetime, bound: str | None,
                        counted: Fraction, normal_from: Fraction | None) -> str:
    """A reported eGFR or creatinine clearance, how it is counted: ``normal_from`` when a ">X"
    result placed the patient in the normal band, ``counted`` the number as written."""
    label, unit = ("eGFR", "mL/min/1.73 m2") if egfr else ("CrCl", "mL/min")
    how = ("reported eGFR, used as a stand-in for creatinine clearance" if egfr
           else "reported creatinine clearance")
    if normal_from is not None:
        how += f"; a result above {fmt(normal_from)} places the patient in the normal band"
    elif bound == "<":
        how += f"; counted as just under {fmt(counted)}"
    elif bound == ">":
        how += f"; counted as {fmt(counted)}"
    return f"{label} {written} {unit} on {day(at)} ({how})"


def estimated_renal_text(cockcroft_gault: bool, rounded: Fraction, at: datetime, label: str,
                         how: str) -> str:
    """A value computed here from a creatinine, with its arithmetic (``how``)."""
    if cockcroft_gault:
        return f"CrCl {fmt(rounded)} mL/min on {day(at)} (Cockcroft-Gault, {how})"
    return (f"eGFR {fmt(rounded)} mL/min/1.73 m2 on {day(at)} (estimated here with the {label} "
            f"equation, {how}; used as a stand-in for creatinine clearance)")


def estimate_age_text(age_years: Fraction, partial: bool) -> str:
    text = f"age {fmt(age_years)}"
    return text + " (the older end of a partial birth date)" if partial else text


def cockcroft_gault_how(weight: str, creatinine: str, age: str, sex: str | None,
                        older_from: Fraction | None) -> str:
    """The inputs of a Cockcroft-Gault estimate; ``sex`` None: not recorded as male or female;
    ``older_from``: the age from which a low creatinine can overestimate clearance, when the
    patient has reached it."""
    sex_text = sex or "sex not recorded as male or female: female factor used"
    caution = (f"; at {fmt(older_from)} or older a low creatinine can overestimate clearance"
               if older_from is not None else "")
    return f"{weight}, creatinine {creatinine}, {age}, {sex_text}{caution}"


def ckd_epi_how(creatinine: str, age: str, sex: str | None) -> str:
    """The inputs of a CKD-EPI 2021 estimate; ``sex`` None: the lower of the two estimates."""
    sex_text = sex or "sex not recorded as male or female: the lower of the two estimates"
    return f"no weight for Cockcroft-Gault: creatinine {creatinine}, {age}, {sex_text}"


def schwartz_how(k: Fraction, height_cm: Fraction, creatinine: str) -> str:
    return f"{fmt(k, 3)} x height {fmt(height_cm)} cm / creatinine {creatinine}"


def actual_weight_text(actual_kg: Fraction) -> str:
    return f"actual weight {fmt(actual_kg)} kg"


def adjusted_weight_text(adjusted_kg: Fraction, ideal_kg: Fraction, fraction: Fraction,
                         actual_kg: Fraction, bmi: Fraction, height_cm: Fraction) -> str:
    return (f"adjusted weight {fmt(adjusted_kg)} kg = IBW {fmt(ideal_kg)} kg + {fmt(fraction)} x "
            f"(actual {fmt(actual_kg)} kg - IBW), BMI {fmt(bmi)}, height {fmt(height_cm)} cm")


def ckd_stage_text(label: str, rounded: Fraction) -> str:
    return (f"chronic kidney disease stage on the problem list, {label}: counted as "
            f"{fmt(rounded)} mL/min, the top of the stage's eGFR range (the value comes from "
            f"the problem list, not a result: get a current creatinine)")


def condition_label(texts: list[str], codes: list[str], ref: str) -> str:
    """"chronic kidney disease (N18.3; Condition/c1)": the first text and the codes."""
    label = texts[0] if texts else "a condition"
    return f"{label} ({', '.join(codes)}; {ref})" if codes else f"{label} ({ref})"


def transplant_condition_text(label: str) -> str:
    return f"kidney transplant: {label}"


def transplant_procedure_text(ref: str) -> str:
    return f"kidney transplant procedure ({ref})"


def dialysis_procedure_text(ref: str, at: datetime | None, ongoing: bool) -> str:
    if ongoing:
        since = f" since {day(at)}" if at else ""
        return f"ongoing dialysis{since} ({ref})"
    assert at is not None
    return f"dialysis procedure on {day(at)} ({ref})"
