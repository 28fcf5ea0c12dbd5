"""Kidney function as arithmetic (clinical-rules sections 2 and 5): Cockcroft-Gault, ideal and
adjusted body weight, BMI, CKD-EPI 2021, bedside Schwartz, rounding, bands, the kidney cap,
creatinine units and the choice of the one renal value.

Numbers in, numbers out: no prose, no FHIR, no clock (the band names are service/model.py's).
Units live in the names (``weight_kg``, ``creatinine_mg_dl``, ``ml_min``) and numbers are exact
``Fraction`` values. Every constant is passed in: the sections of ``patient_context.renal`` in
service/knowledge/baclofen.yaml, which cites the source of each (S39 Cockcroft-Gault, S45
CKD-EPI 2021, S46 bedside Schwartz, S15 the bands and caps); the Protocols below name the keys
each formula reads. Bad input raises
``RenalInputError`` (never a silent 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Protocol, TypeVar

from ..model import BAND_ORDER, RenalBand


class RenalInputError(ValueError):
    """An input to a kidney formula is out of range (the formula is not applied)."""


# --- the constants each formula reads (patient_context.renal.*) ---------------------------

class IdealBodyWeightSpec(Protocol):
    """``patient_context.renal.ideal_body_weight`` (Devine)."""

    @property
    def male_base_kg(self) -> Fraction: ...
    @property
    def female_base_kg(self) -> Fraction: ...
    @property
    def kg_per_inch_over(self) -> Fraction: ...
    @property
    def base_height_in(self) -> Fraction: ...
    @property
    def cm_per_inch(self) -> Fraction: ...


class CockcroftGaultSpec(Protocol):
    """``patient_context.renal.cockcroft_gault`` (S39)."""

    @property
    def age_from(self) -> Fraction: ...
    @property
    def age_constant(self) -> Fraction: ...
    @property
    def divisor(self) -> Fraction: ...
    @property
    def female_factor(self) -> Fraction: ...
    @property
    def obesity_bmi_from(self) -> Fraction: ...
    @property
    def adjusted_weight_fraction(self) -> Fraction: ...


class CkdEpi2021Spec(Protocol):
    """``patient_context.renal.ckd_epi_2021`` (S45, race-free)."""

    @property
    def age_from(self) -> Fraction: ...
    @property
    def constant(self) -> Fraction: ...
    @property
    def kappa_female(self) -> Fraction: ...
    @property
    def kappa_male(self) -> Fraction: ...
    @property
    def alpha_female(self) -> Fraction: ...
    @property
    def alpha_male(self) -> Fraction: ...
    @property
    def exponent_above(self) -> Fraction: ...
    @property
    def age_base(self) -> Fraction: ...
    @property
    def female_factor(self) -> Fraction: ...


class BedsideSchwartzSpec(Protocol):
    """``patient_context.renal.bedside_schwartz`` (S46)."""

    @property
    def age_from(self) -> Fraction: ...
    @property
    def age_below(self) -> Fraction: ...
    @property
    def k(self) -> Fraction: ...


class BandSpec(Protocol):
    """The bands and caps of ``patient_context.renal`` (S15, S12)."""

    @property
    def round_to(self) -> Fraction: ...
    @property
    def band_normal_above(self) -> Fraction: ...
    @property
    def band_mild_from(self) -> Fraction: ...
    @property
    def band_moderate_from(self) -> Fraction: ...
    @property
    def esrd_below(self) -> Fraction: ...
    @property
    def cap_fraction(self) -> Mapping[str, Fraction]: ...
    @property
    def severe_cap_mg_day(self) -> Fraction: ...
    @property
    def dialysis_cap_mg_day(self) -> Fraction: ...


# --- body size ----------------------------------------------------------------------------

def ideal_body_weight_kg(height_cm: Fraction, female: bool, ibw: IdealBodyWeightSpec
                         ) -> Fraction:
    """Devine: the base weight plus ``kg_per_inch_over`` per inch over ``base_height_in``; no
    negative increment below it."""
    if height_cm <= 0:
        raise RenalInputError(f"height must be positive, got {height_cm} cm")
    base = ibw.female_base_kg if female else ibw.male_base_kg
    over = max(height_cm / ibw.cm_per_inch - ibw.base_height_in, Fraction(0))
    return base + ibw.kg_per_inch_over * over


def adjusted_body_weight_kg(actual_kg: Fraction, ideal_kg: Fraction, fraction: Fraction
                            ) -> Fraction:
    """IBW + ``fraction`` x (actual - IBW) (``cockcroft_gault.adjusted_weight_fraction``)."""
    return ideal_kg + fraction * (actual_kg - ideal_kg)


def bmi(weight_kg: Fraction, height_cm: Fraction) -> Fraction:
    """Body mass index, kg/m2."""
    if weight_kg <= 0 or height_cm <= 0:
        raise RenalInputError("weight and height must be positive")
    metres = height_cm / 100
    return weight_kg / (metres * metres)


# --- kidney function formulas ------------------------------------------------------------

def cockcroft_gault(age_years: Fraction, weight_kg: Fraction, creatinine_mg_dl: Fraction,
                    female: bool, cg: CockcroftGaultSpec) -> Fraction:
    """CrCl (mL/min) = (age_constant - age) x weight / (divisor x SCr), x female_factor for
    women (S39); not used below ``age_from``."""
    if age_years < cg.age_from:
        raise RenalInputError(f"Cockcroft-Gault is not used below {cg.age_from} years")
    if age_years >= cg.age_constant:
        raise RenalInputError(f"age {age_years} is out of range")
    if weight_kg <= 0:
        raise RenalInputError(f"weight must be positive, got {weight_kg} kg")
    if creatinine_mg_dl <= 0:
        raise RenalInputError(f"creatinine must be positive, got {creatinine_mg_dl} mg/dL")
    value = (cg.age_constant - age_years) * weight_kg / (cg.divisor * creatinine_mg_dl)
    return value * cg.female_factor if female else value


def _real(x: float) -> Fraction:
    """A float result of a power law as an exact number (to 1e-9: far below the rounding step
    every comparison uses)."""
    return Fraction(round(x * 1_000_000_000), 1_000_000_000)


def ckd_epi_2021(age_years: Fraction, creatinine_mg_dl: Fraction, female: bool,
                 c: CkdEpi2021Spec) -> Fraction:
    """eGFR (mL/min/1.73 m2) = constant x min(SCr/kappa, 1)^alpha x max(SCr/kappa, 1)^
    exponent_above x age_base^age, x female_factor for women; kappa and alpha by sex (S45)."""
    if age_years < c.age_from:
        raise RenalInputError(f"CKD-EPI 2021 is not used below {c.age_from} years")
    if creatinine_mg_dl <= 0:
        raise RenalInputError(f"creatinine must be positive, got {creatinine_mg_dl} mg/dL")
    kappa = float(c.kappa_female if female else c.kappa_male)
    alpha = float(c.alpha_female if female else c.alpha_male)
    ratio = float(creatinine_mg_dl) / kappa
    value = (float(c.constant) * min(ratio, 1.0) ** alpha
             * max(ratio, 1.0) ** float(c.exponent_above)
             * float(c.age_base) ** float(age_years))
    if female:
        value *= float(c.female_factor)
    return _real(value)


def bedside_schwartz(age_years: Fraction, height_cm: Fraction, creatinine_mg_dl: Fraction,
                     c: BedsideSchwartzSpec) -> Fraction:
    """eGFR (mL/min/1.73 m2) = k x height_cm / SCr_mg_dL, from ``age_from`` to below
    ``age_below`` years (S46)."""
    if not c.age_from <= age_years < c.age_below:
        raise RenalInputError(f"bedside Schwartz is used from {c.age_from} to below "
                              f"{c.age_below} years")
    if height_cm <= 0 or creatinine_mg_dl <= 0:
        raise RenalInputError("height and creatinine must be positive")
    return c.k * height_cm / creatinine_mg_dl


def creatinine_umol_l_to_mg_dl(umol_l: Fraction, umol_l_per_mg_dl: Fraction) -> Fraction:
    """mg/dL = micromol/L / ``umol_l_per_mg_dl``."""
    return umol_l / umol_l_per_mg_dl


# --- rounding, bands, caps ----------------------------------------------------------------

def round_renal(ml_min: Fraction, step: Fraction) -> Fraction:
    """Round to ``step`` (``round_to``: half up) before any comparison."""
    return math.floor(ml_min / step + Fraction(1, 2)) * step


def just_under(ml_min: Fraction, step: Fraction) -> Fraction:
    """A result "< X": the largest multiple of ``step`` below X."""
    return (-((-ml_min) // step)) * step - step


def band_of(rounded_ml_min: Fraction, bands: BandSpec) -> RenalBand:
    """normal above ``band_normal_above``; mild from ``band_mild_from``; moderate from
    ``band_moderate_from``; severe from ``esrd_below``; esrd below it."""
    if rounded_ml_min > bands.band_normal_above:
        return "normal"
    if rounded_ml_min >= bands.band_mild_from:
        return "mild"
    if rounded_ml_min >= bands.band_moderate_from:
        return "moderate"
    if rounded_ml_min >= bands.esrd_below:
        return "severe"
    return "esrd"


@dataclass(frozen=True)
class RenalCap:
    band: RenalBand
    cap_mg_day: Fraction
    fraction: Fraction | None      # of the applicable cap; None for a fixed cap
    of_mg_day: Fraction            # the applicable cap it was scaled from


def renal_cap(band: RenalBand, applicable_cap_mg_day: Fraction, caps: BandSpec
              ) -> RenalCap | None:
    """The kidney cap for ``band``: the band's ``cap_fraction`` of ``applicable_cap_mg_day``
    (the age cap for children, the profile maximum otherwise), ``severe_cap_mg_day`` in the
    severe band and ``dialysis_cap_mg_day`` on dialysis. Caps are not rounded. None in the
    normal band."""
    if band in caps.cap_fraction:
        f = caps.cap_fraction[band]
        return RenalCap(band, f * applicable_cap_mg_day, f, applicable_cap_mg_day)
    if band == "severe":
        return RenalCap(band, caps.severe_cap_mg_day, None, applicable_cap_mg_day)
    if band == "esrd":
        return RenalCap(band, caps.dialysis_cap_mg_day, None, applicable_cap_mg_day)
    return None


# --- the one renal value ------------------------------------------------------------------

class Candidate(Protocol):
    @property
    def band(self) -> RenalBand: ...
    @property
    def rounded_ml_min(self) -> Fraction: ...
    @property
    def at(self) -> datetime: ...
    @property
    def refs(self) -> tuple[str, ...]: ...


C = TypeVar("C", bound=Candidate)


def choose(candidates: Sequence[C], window_days: Fraction) -> C | None:
    """*The* renal value: among candidates dated within ``window_days``
    (``same_time_window_days``) of the newest, the one in the more restrictive band (then the
    lower value, then the newer). Older candidates count only when nothing newer exists."""
    if not candidates:
        return None
    window = timedelta(days=float(window_days))
    newest = max(c.at for c in candidates)
    recent = [c for c in candidates if c.at >= newest - window]
    return min(recent, key=lambda c: (BAND_ORDER.index(c.band), c.rounded_ml_min,
                                      -c.at.timestamp(), c.refs))
