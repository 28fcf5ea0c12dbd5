"""Kidney function: Cockcroft-Gault, ideal and adjusted body weight, renal measures from
Observations, bounded results, freshness, the one renal value, dialysis/ESRD and chronic
kidney disease (clinical-rules sections 2 and 5).

Units live in the names (``weight_kg``, ``creatinine_mg_dl``, ``ml_min``); numbers are exact
``Fraction`` values. Bad input to the formulas raises ``RenalInputError`` (never a silent 0);
``read_renal`` skips results it cannot use and says why in ``RenalFacts.notes``.

Public API (used by the renal, titration, pediatric and withdrawal rules):

- ``cockcroft_gault(age_years, weight_kg, creatinine_mg_dl, female, kb) -> Fraction``
- ``ideal_body_weight_kg(height_cm, female, kb) -> Fraction``
- ``adjusted_body_weight_kg(actual_kg, ideal_kg, kb) -> Fraction``
- ``round_renal(ml_min, kb) -> Fraction`` (0.1 mL/min, half up)
- ``band_of(rounded_ml_min, kb) -> RenalBand``
- ``renal_cap(band, applicable_cap_mg_day, kb) -> RenalCap | None``: the band's cap, scaled
  from the cap that applies to the patient (the age cap for children, the profile maximum
  otherwise); None in the normal band.
- ``read_renal(resources, patient, check_time, kb, egfr_only=False) -> RenalFacts``
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from .fhirjson import (
    JSON,
    as_dict,
    as_number,
    as_str,
    codings,
    concept_texts,
    elapsed_days,
    has_code,
    parse_instant,
)
from .knowledge import Knowledge, frac
from .model import (
    BAND_ORDER,
    ConditionEvidence,
    PatientFacts,
    RenalBand,
    RenalCandidate,
    RenalFacts,
    RenalSource,
)
from .patient import Resource, condition_counts, has_loinc, observation_time, usable_result
from .wording import fmt


class RenalInputError(ValueError):
    """An input to a kidney formula is out of range (the formula is not applied)."""


def _spec(kb: Knowledge) -> dict[str, Any]:
    return dict(kb.data["patient_context"]["renal"])


# --- formulas ---------------------------------------------------------------------------

def ideal_body_weight_kg(height_cm: Fraction, female: bool, kb: Knowledge) -> Fraction:
    """Devine: 50 kg (men) or 45.5 kg (women) + 2.3 kg per inch over 60 inches; no negative
    increment below 60 inches."""
    if height_cm <= 0:
        raise RenalInputError(f"height must be positive, got {height_cm} cm")
    ibw = _spec(kb)["ideal_body_weight"]
    base = frac(ibw["female_base_kg" if female else "male_base_kg"])
    inches = height_cm / frac(ibw["cm_per_inch"])
    over = max(inches - frac(ibw["base_height_in"]), Fraction(0))
    return base + frac(ibw["kg_per_inch_over"]) * over


def adjusted_body_weight_kg(actual_kg: Fraction, ideal_kg: Fraction, kb: Knowledge) -> Fraction:
    """IBW + 0.4 x (actual - IBW)."""
    fraction = frac(_spec(kb)["cockcroft_gault"]["adjusted_weight_fraction"])
    return ideal_kg + fraction * (actual_kg - ideal_kg)


def bmi(weight_kg: Fraction, height_cm: Fraction) -> Fraction:
    if weight_kg <= 0 or height_cm <= 0:
        raise RenalInputError("weight and height must be positive")
    metres = height_cm / 100
    return weight_kg / (metres * metres)


def cockcroft_gault(age_years: Fraction, weight_kg: Fraction, creatinine_mg_dl: Fraction,
                    female: bool, kb: Knowledge) -> Fraction:
    """CrCl (mL/min) = (140 - age) x weight / (72 x SCr), x 0.85 for women (S39)."""
    cg = _spec(kb)["cockcroft_gault"]
    if age_years < frac(cg["age_from"]):
        raise RenalInputError(f"Cockcroft-Gault is not used below {cg['age_from']} years")
    if age_years >= frac(cg["age_constant"]):
        raise RenalInputError(f"age {age_years} is out of range")
    if weight_kg <= 0:
        raise RenalInputError(f"weight must be positive, got {weight_kg} kg")
    if creatinine_mg_dl <= 0:
        raise RenalInputError(f"creatinine must be positive, got {creatinine_mg_dl} mg/dL")
    value = (frac(cg["age_constant"]) - age_years) * weight_kg / (
        frac(cg["divisor"]) * creatinine_mg_dl)
    return value * frac(cg["female_factor"]) if female else value


def _real(x: float) -> Fraction:
    """A float result of a power law as an exact number (to 1e-9: far below the 0.1 mL/min
    rounding every comparison uses)."""
    return Fraction(round(x * 1_000_000_000), 1_000_000_000)


def ckd_epi_2021(age_years: Fraction, creatinine_mg_dl: Fraction, female: bool, kb: Knowledge
                 ) -> Fraction:
    """eGFR (mL/min/1.73 m2) = 142 x min(SCr/k, 1)^a x max(SCr/k, 1)^-1.200 x 0.9938^age
    x 1.012 for women; k 0.7/0.9 and a -0.241/-0.302 for women/men (S45, race-free)."""
    c = _spec(kb)["ckd_epi_2021"]
    if age_years < frac(c["age_from"]):
        raise RenalInputError(f"CKD-EPI 2021 is not used below {c['age_from']} years")
    if creatinine_mg_dl <= 0:
        raise RenalInputError(f"creatinine must be positive, got {creatinine_mg_dl} mg/dL")
    kappa = float(frac(c["kappa_female" if female else "kappa_male"]))
    alpha = float(frac(c["alpha_female" if female else "alpha_male"]))
    ratio = float(creatinine_mg_dl) / kappa
    value = (float(frac(c["constant"])) * min(ratio, 1.0) ** alpha
             * max(ratio, 1.0) ** float(frac(c["exponent_above"]))
             * float(frac(c["age_base"])) ** float(age_years))
    if female:
        value *= float(frac(c["female_factor"]))
    return _real(value)


def bedside_schwartz(age_years: Fraction, height_cm: Fraction, creatinine_mg_dl: Fraction,
                     kb: Knowledge) -> Fraction:
    """eGFR (mL/min/1.73 m2) = 0.413 x height_cm / SCr_mg_dL, from 1 to below 18 years
    (S46)."""
    c = _spec(kb)["bedside_schwartz"]
    if not frac(c["age_from"]) <= age_years < frac(c["age_below"]):
        raise RenalInputError(f"bedside Schwartz is used from {c['age_from']} to below "
                              f"{c['age_below']} years")
    if height_cm <= 0 or creatinine_mg_dl <= 0:
        raise RenalInputError("height and creatinine must be positive")
    return frac(c["k"]) * height_cm / creatinine_mg_dl


def round_renal(ml_min: Fraction, kb: Knowledge) -> Fraction:
    """Round to 0.1 mL/min (half up) before any comparison."""
    step = frac(_spec(kb)["round_to"])
    return math.floor(ml_min / step + Fraction(1, 2)) * step


def band_of(rounded_ml_min: Fraction, kb: Knowledge) -> RenalBand:
    """normal > 80; mild 50-80; moderate 30 to < 50; severe < 30; below 15 dialysis/ESRD."""
    s = _spec(kb)
    if rounded_ml_min > frac(s["band_normal_above"]):
        return "normal"
    if rounded_ml_min >= frac(s["band_mild_from"]):
        return "mild"
    if rounded_ml_min >= frac(s["band_moderate_from"]):
        return "moderate"
    if rounded_ml_min >= frac(s["esrd_below"]):
        return "severe"
    return "esrd"


@dataclass(frozen=True)
class RenalCap:
    band: RenalBand
    cap_mg_day: Fraction
    fraction: Fraction | None      # of the applicable cap; None for a fixed cap
    of_mg_day: Fraction            # the applicable cap it was scaled from
    text: str                      # "cap 40 mg/day (half of 80 mg/day)"


_FRACTION_WORDS = {Fraction(1, 2): "half", Fraction(2, 3): "two thirds",
                   Fraction(1, 3): "one third"}


def renal_cap(band: RenalBand, applicable_cap_mg_day: Fraction, kb: Knowledge
              ) -> RenalCap | None:
    """The kidney cap for ``band``: mild 2/3 and moderate 1/2 of ``applicable_cap_mg_day``
    (the age cap for children, the profile maximum otherwise), 5 mg/day in the severe band
    and on dialysis. Caps are not rounded. None in the normal band."""
    s = _spec(kb)
    if band in s["cap_fraction"]:
        f = frac(s["cap_fraction"][band])
        cap = f * applicable_cap_mg_day
        words = _FRACTION_WORDS.get(f, f"{f.numerator}/{f.denominator}")
        return RenalCap(band, cap, f, applicable_cap_mg_day,
                        f"cap {fmt(cap)} mg/day ({words} of {fmt(applicable_cap_mg_day)} mg/day)")
    if band == "severe":
        cap = frac(s["severe_cap_mg_day"])
        return RenalCap(band, cap, None, applicable_cap_mg_day, f"cap {fmt(cap)} mg/day")
    if band == "esrd":
        cap = frac(s["dialysis_cap_mg_day"])
        return RenalCap(band, cap, None, applicable_cap_mg_day, f"about {fmt(cap)} mg/day")
    return None


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


def _date(t: datetime) -> str:
    return t.date().isoformat()


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

    ``egfr_only``: children (under 18) are judged on a reported eGFR only.
    """
    s = _spec(kb)
    resources = list(resources)
    notes: list[str] = []
    candidates: list[RenalCandidate] = []
    creatinines: list[_Creatinine] = []
    max_days, stale_days = frac(s["max_age_days"]), frac(s["stale_after_days"])
    rate_units = {_norm_unit(u) for u in s["rate_units"]}
    for ref, obs in resources:
        if obs.get("resourceType") != "Observation":
            continue
        kind: str | None = None
        if has_loinc(obs, s["egfr_loinc"], kb):
            kind = "egfr"
        elif has_loinc(obs, s["crcl_loinc"], kb):
            kind = "crcl"
        elif has_loinc(obs, s["creatinine_loinc"], kb):
            kind = "creatinine"
        if kind is None:
            continue
        if not usable_result(obs, kb):
            notes.append(f"{ref} not used: result status {obs.get('status')!r}")
            continue
        at = observation_time(obs, check_time.tzinfo)
        if at is None:
            notes.append(f"{ref} not used: the result has no date")
            continue
        age_days = elapsed_days(at, check_time)
        if age_days > max_days:
            notes.append(f"{ref} not used: the result of {_date(at)} is older than "
                         f"{fmt(max_days)} days")
            continue
        reading = _read_value(obs)
        if reading is None or reading.value <= 0:
            notes.append(f"{ref} not used: the value cannot be read")
            continue
        unit = _unit(obs)
        if kind == "crcl" and egfr_only:
            notes.append(f"{ref} not used: under 18 a reported eGFR or the bedside Schwartz "
                         "estimate is used")
            continue
        if kind == "creatinine":
            cr = _creatinine_mg_dl(obs, reading, unit, s)
            if cr is None:
                notes.append(f"{ref} not used: creatinine unit {unit!r} is not known")
                continue
            if reading.bound == ">":
                notes.append(f"{ref} not used: creatinine {reading.written} gives only an upper "
                             "bound of the clearance")
                continue
            plausible = s["plausible_creatinine_mg_dl"]
            if not frac(plausible["low"]) <= cr <= frac(plausible["high"]):
                notes.append(f"{ref} not used: creatinine {reading.written} {unit or ''} is "
                             "outside the plausible range (a typing or unit error?)")
                continue
            as_mg_dl = cr == reading.value
            written = (f"{reading.written} mg/dL" if as_mg_dl else
                       f"{reading.written} micromol/L = {fmt(cr, 2)} mg/dL")
            creatinines.append(_Creatinine(ref, cr, written,
                                           at))
            continue
        # choice: any unit written as mL/min (per 1.73 m2 in any spelling) is accepted
        if unit is not None and not (_norm_unit(unit) in rate_units
                                     or _norm_unit(unit).startswith("ml/min")):
            notes.append(f"{ref} not used: unit {unit!r} is not mL/min")
            continue
        if reading.value > frac(s["plausible_rate_ml_min_high"]):
            notes.append(f"{ref} not used: {reading.written} mL/min is outside the plausible "
                         "range (a typing or unit error?)")
            continue
        candidates.append(_reported(kind, ref, reading, at, age_days > stale_days, kb))
    unusable: list[str] = []
    candidates += _computed(creatinines, patient, check_time, stale_days, kb, notes, unusable)
    value = choose(candidates, kb)
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


def _creatinine_mg_dl(obs: JSON, reading: _Reading, unit: str | None, s: dict[str, Any]
                      ) -> Fraction | None:
    """mg/dL from the result's unit; the LOINC code's property only when it has none."""
    if unit is None:
        for coding in codings(obs.get("code")):
            code = as_str(coding.get("code"))
            if code in s["creatinine_default_unit"]:
                unit = s["creatinine_default_unit"][code]
                break
    if unit is None:
        return None
    u = _norm_unit(unit)
    if u in {_norm_unit(x) for x in s["creatinine_mg_dl_units"]}:
        return reading.value
    if u in {_norm_unit(x) for x in s["creatinine_umol_l_units"]}:
        return reading.value / frac(s["umol_l_per_mg_dl"])
    return None


def _reported(kind: str, ref: str, reading: _Reading, at: datetime, stale: bool,
              kb: Knowledge) -> RenalCandidate:
    s = _spec(kb)
    source: RenalSource = "egfr" if kind == "egfr" else "crcl"
    label = "eGFR" if source == "egfr" else "CrCl"
    unit = "mL/min/1.73 m2" if source == "egfr" else "mL/min"
    how = ("reported eGFR, used as a stand-in for creatinine clearance" if source == "egfr"
           else "reported creatinine clearance")
    value = reading.value
    band: RenalBand
    if reading.bound == ">" and value >= frac(s["bounded_normal_from"]):
        rounded = round_renal(value, kb)
        band = "normal"
        how += (f"; a result above {fmt(frac(s['bounded_normal_from']))} places the patient "
                "in the normal band")
    elif reading.bound == "<":
        # just under X: the largest 0.1 step below X
        step = frac(s["round_to"])
        rounded = (-((-value) // step)) * step - step
        value = rounded
        band = band_of(rounded, kb)
        how += f"; counted as just under {fmt(reading.value)}"
    else:
        rounded = round_renal(value, kb)
        band = band_of(rounded, kb)
        if reading.bound == ">":
            how += f"; counted as {fmt(reading.value)}"
    text = f"{label} {reading.written} {unit} on {_date(at)} ({how})"
    return RenalCandidate(source, value, rounded, band, at, stale, (ref,), text,
                          reading.bound)


def _computed(creatinines: list[_Creatinine], patient: PatientFacts, check_time: datetime,
              stale_days: Fraction, kb: Knowledge, notes: list[str], unusable: list[str]
              ) -> list[RenalCandidate]:
    """A value from every usable creatinine (clinical-rules section 2): Cockcroft-Gault for
    adults with a weight, else CKD-EPI 2021; bedside Schwartz for children from 1 year with a
    height within 30 days. A creatinine from which no value can be made is named in
    ``unusable`` (renal.unknown reads it).

    choice: with a partial birth date the older end of the age range is used (the lower
    clearance); the adult formulas are applied only when the youngest possible age is 18 or
    more, bedside Schwartz when the youngest is 1 or more and the oldest below 18.
    """
    if not creatinines:
        return []
    s = _spec(kb)
    age = patient.age
    if age is None:
        notes.append("no kidney function estimated from creatinine: the age is unknown")
        unusable += [c.ref for c in creatinines]
        return []
    if age.low_years < frac(s["cockcroft_gault"]["age_from"]):
        return _schwartz(creatinines, patient, check_time, stale_days, kb, notes, unusable)
    female = patient.sex != "male"
    sex_text = {"male": "male", "female": "female"}.get(patient.sex or "",
                                                        "sex not recorded as male or female: "
                                                        "female factor used")
    age_years = age.high_years
    age_text = f"age {fmt(age_years)}"
    if age.partial:
        age_text += " (the older end of a partial birth date)"
    if patient.weight_kg is None:
        notes.append("Cockcroft-Gault not computed: no recent weight (CKD-EPI 2021 used)")
        return _ckd_epi(creatinines, patient, age_years, age_text, check_time, stale_days, kb,
                        notes, unusable)
    weight, weight_text, refs = _weight_for_cg(patient, female, kb)
    older = frac(kb.data["patient_context"]["older_age"])
    caution = ("; at 65 or older a low creatinine can overestimate clearance"
               if age_years >= older else "")

    def estimate(cr: _Creatinine) -> tuple[Fraction, str]:
        return cockcroft_gault(age_years, weight, cr.mg_dl, female, kb), (
            f"{weight_text}, creatinine {cr.written}, {age_text}, {sex_text}{caution}")

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
            notes.append(f"{label} not computed: {exc}")
            unusable.append(cr.ref)
            continue
        rounded = round_renal(value, kb)
        if source == "cockcroft-gault":
            text = f"CrCl {fmt(rounded)} mL/min on {_date(cr.at)} (Cockcroft-Gault, {how})"
        else:
            text = (f"eGFR {fmt(rounded)} mL/min/1.73 m2 on {_date(cr.at)} (estimated here "
                    f"with the {label} equation, {how}; used as a stand-in for creatinine "
                    f"clearance)")
        out.append(RenalCandidate(
            source, value, rounded, band_of(rounded, kb), cr.at,
            elapsed_days(cr.at, check_time) > stale_days, (cr.ref, *extra_refs), text))
    return out


def _ckd_epi(creatinines: list[_Creatinine], patient: PatientFacts, age_years: Fraction,
             age_text: str, check_time: datetime, stale_days: Fraction, kb: Knowledge,
             notes: list[str], unusable: list[str]) -> list[RenalCandidate]:
    """CKD-EPI 2021 for adults without a usable weight; other, unknown or missing sex: the
    lower of the two estimates (clinical-rules section 2)."""

    def estimate(cr: _Creatinine) -> tuple[Fraction, str]:
        if patient.sex in {"male", "female"}:
            value = ckd_epi_2021(age_years, cr.mg_dl, patient.sex == "female", kb)
            sex_text = str(patient.sex)
        else:
            value = min(ckd_epi_2021(age_years, cr.mg_dl, True, kb),
                        ckd_epi_2021(age_years, cr.mg_dl, False, kb))
            sex_text = "sex not recorded as male or female: the lower of the two estimates"
        return value, (f"no weight for Cockcroft-Gault: creatinine {cr.written}, {age_text}, "
                       f"{sex_text}")

    return _estimated(creatinines, "ckd-epi-2021", "CKD-EPI 2021 creatinine", estimate, (),
                      check_time, stale_days, kb, notes, unusable)


def _schwartz(creatinines: list[_Creatinine], patient: PatientFacts, check_time: datetime,
              stale_days: Fraction, kb: Knowledge, notes: list[str], unusable: list[str]
              ) -> list[RenalCandidate]:
    """Bedside Schwartz for children from 1 to below 18 with a height within 30 days."""
    c = _spec(kb)["bedside_schwartz"]
    age = patient.age
    assert age is not None
    if age.low_years < frac(c["age_from"]):
        notes.append(f"no eGFR estimated from creatinine below {c['age_from']} year of age")
        unusable += [cr.ref for cr in creatinines]
        return []
    height = patient.height_cm
    if height is None:
        notes.append("bedside Schwartz not computed: no height within 30 days")
        unusable += [cr.ref for cr in creatinines]
        return []

    def estimate(cr: _Creatinine) -> tuple[Fraction, str]:
        return bedside_schwartz(age.low_years, height, cr.mg_dl, kb), (
            f"{fmt(frac(c['k']), 3)} x height {fmt(height)} cm / creatinine {cr.written}")

    return _estimated(creatinines, "bedside-schwartz", "bedside Schwartz", estimate,
                      tuple(r for r in [patient.height_ref] if r), check_time, stale_days, kb,
                      notes, unusable)


def _weight_for_cg(patient: PatientFacts, female: bool, kb: Knowledge
                   ) -> tuple[Fraction, str, tuple[str, ...]]:
    """Actual weight, or the adjusted weight when BMI >= 30 and the height is known."""
    assert patient.weight_kg is not None
    actual = patient.weight_kg
    refs = tuple(r for r in [patient.weight_ref] if r)
    cg = _spec(kb)["cockcroft_gault"]
    if patient.height_cm is not None:
        body_mass = bmi(actual, patient.height_cm)
        if body_mass >= frac(cg["obesity_bmi_from"]):
            ideal = ideal_body_weight_kg(patient.height_cm, female, kb)
            if ideal < actual:
                adjusted = adjusted_body_weight_kg(actual, ideal, kb)
                refs += tuple(r for r in [patient.height_ref] if r)
                return adjusted, (
                    f"adjusted weight {fmt(adjusted)} kg = IBW {fmt(ideal)} kg + 0.4 x "
                    f"(actual {fmt(actual)} kg - IBW), BMI {fmt(body_mass)}, height "
                    f"{fmt(patient.height_cm)} cm"), refs
    return actual, f"actual weight {fmt(actual)} kg", refs


def choose(candidates: list[RenalCandidate], kb: Knowledge) -> RenalCandidate | None:
    """*The* renal value: among candidates dated within 7 days of the newest, the one in the
    more restrictive band (then the lower value, then the newer). Older candidates count only
    when nothing newer exists (they are outside the window of the newest)."""
    if not candidates:
        return None
    window = timedelta(days=float(frac(_spec(kb)["same_time_window_days"])))
    newest = max(c.at for c in candidates)
    recent = [c for c in candidates if c.at >= newest - window]
    return min(recent, key=lambda c: (BAND_ORDER.index(c.band), c.rounded_ml_min,
                                      -c.at.timestamp(), c.refs))


# --- conditions and procedures ------------------------------------------------------------

def _icd10(concept: Any, kb: Knowledge) -> list[str]:
    systems = set(kb.data["patient_context"]["icd10_systems"])
    return [str(c.get("code")).replace(".", "").upper() for c in codings(concept)
            if as_str(c.get("system")) in systems and as_str(c.get("code"))]


def _condition_label(ref: str, r: JSON) -> str:
    texts = concept_texts(r.get("code"))
    codes = [str(c.get("code")) for c in codings(r.get("code")) if as_str(c.get("code"))]
    label = texts[0] if texts else "a condition"
    return f"{label} ({', '.join(codes)}; {ref})" if codes else f"{label} ({ref})"


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
    """Dialysis/ESRD Conditions (status respected), dialysis Procedures within the last 90
    days or ongoing (in-progress, or a performedPeriod without an end), and a kidney
    transplant, after which ESRD and dialysis Conditions no longer count and a dialysis
    Procedure counts only when performed after it (clinical-rules section 2).

    choice: a Procedure without a date, or with status not-done or entered-in-error, does not
    count (its time cannot be judged)."""
    pc = kb.data["patient_context"]
    spec, tx = pc["dialysis"], pc["kidney_transplant"]
    snomed = kb.recognition["snomed_system"]
    icd = {c.replace(".", "") for c in spec["icd10"]}
    tx_icd = {c.replace(".", "") for c in tx["icd10"]}
    tz = check_time.tzinfo
    conditions: list[ConditionEvidence] = []
    procedures: list[tuple[ConditionEvidence, datetime]] = []
    transplants: list[tuple[ConditionEvidence, datetime | None]] = []
    for ref, r in resources:
        rtype = r.get("resourceType")
        text = " ".join(concept_texts(r.get("code"))).lower()
        names_tx = (set(_icd10(r.get("code"), kb)) & tx_icd
                    or has_code(r.get("code"), snomed, tx["snomed"])
                    or any(w in text for w in tx["words"]))
        if rtype == "Condition":
            if not condition_counts(r, kb):
                continue
            if names_tx:
                transplants.append((ConditionEvidence(
                    ref, f"kidney transplant: {_condition_label(ref, r)}"),
                    _condition_time(r, tz)))
            elif (set(_icd10(r.get("code"), kb)) & icd
                    or has_code(r.get("code"), snomed, spec["snomed"])
                    or any(w in text for w in spec["words"])):
                conditions.append(ConditionEvidence(ref, _condition_label(ref, r)))
        elif rtype == "Procedure":
            status = as_str(r.get("status"))
            if status in {"not-done", "entered-in-error"}:
                continue
            if names_tx:
                transplants.append((ConditionEvidence(
                    ref, f"kidney transplant procedure ({ref})"), _procedure_time(r, tz)))
                continue
            if not (has_code(r.get("code"), snomed, spec["procedure_snomed"])
                    or any(w in text for w in spec["procedure_words"])):
                continue
            period = as_dict(r.get("performedPeriod"))
            ongoing = status in spec.get("ongoing_statuses", []) or (
                bool(period) and period.get("start") is not None and period.get("end") is None)
            at = _procedure_time(r, tz)
            if ongoing:
                since = f" since {_date(at)}" if at else ""
                procedures.append((ConditionEvidence(
                    ref, f"ongoing dialysis{since} ({ref})"), at or check_time))
            elif at is not None and elapsed_days(at, check_time) <= frac(
                    spec["procedure_max_age_days"]):
                procedures.append((ConditionEvidence(
                    ref, f"dialysis procedure on {_date(at)} ({ref})"), at))
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
    spec = _spec(kb)["ckd_stage_ml_min"]
    icd = {k.replace(".", "").upper(): frac(v) for k, v in spec["icd10"].items()}
    snomed_values = {str(k): frac(v) for k, v in spec["snomed"].items()}
    snomed = kb.recognition["snomed_system"]
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
    rounded = round_renal(value, kb)
    text = (f"chronic kidney disease stage on the problem list, {label}: counted as "
            f"{fmt(rounded)} mL/min, the top of the stage's eGFR range (the value comes from "
            f"the problem list, not a result: get a current creatinine)")
    return RenalCandidate("ckd-stage", value, rounded, band_of(rounded, kb), check_time, False,
                          (ref,), text)


def ckd_evidence(resources: Iterable[Resource], kb: Knowledge) -> tuple[ConditionEvidence, ...]:
    """Chronic kidney disease: ICD-10-CM N18.* or text "chronic kidney disease"."""
    spec = kb.data["patient_context"]["ckd"]
    out = []
    for ref, r in resources:
        if r.get("resourceType") != "Condition" or not condition_counts(r, kb):
            continue
        text = " ".join(concept_texts(r.get("code"))).lower()
        if any(c.startswith(spec["icd10_prefix"]) for c in _icd10(r.get("code"), kb)) or any(
            w in text for w in spec["words"]
        ):
            out.append(ConditionEvidence(ref, _condition_label(ref, r)))
    return tuple(out)
