"""The typed sections of the knowledge file, one frozen dataclass per YAML mapping.

Field names are the YAML keys (``service/knowledge/baclofen.yaml`` documents each value and
its source); annotations say what each value must be (``checked.read``). Clinical numbers are
exact ``Fraction`` values; code lists are tuples of text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

Codes = tuple[str, ...]


@dataclass(frozen=True)
class Source:
    title: str
    url: str


@dataclass(frozen=True)
class CodeDisplay:
    system: str
    display: Mapping[str, str]


@dataclass(frozen=True)
class Recognition:
    rxnorm_system: str
    baclofen_rxnorm: Codes
    baclofen_word: str
    baclofen_brands: Codes
    baclofen_brands_source: str
    intrathecal_brands: Codes
    atc_system: str
    baclofen_atc: Codes
    baclofen_product_rxnorm: Codes
    snomed_system: str
    intrathecal_route_snomed: Codes
    oral_route_snomed: Codes
    enteral_route_snomed: Codes
    intrathecal_route_words: Codes
    intrathecal_product_words: Codes
    oral_route_words: Codes
    bolus_words: Codes


@dataclass(frozen=True)
class Units:
    mass_mg_per_unit: Mapping[str, Fraction]
    mass_aliases: Mapping[str, Codes]
    volume_aliases: Codes
    count_aliases: Codes
    period_aliases: Mapping[str, str]
    weight_kg_per_unit: Mapping[str, Fraction]
    height_cm_per_unit: Mapping[str, Fraction]


@dataclass(frozen=True)
class Timing:
    period_unit_days: Mapping[str, Fraction]
    codes_per_day: Mapping[str, Fraction]


@dataclass(frozen=True)
class Dosing:
    suggestion_step_mg: Fraction
    usual_doses_per_day: tuple[Fraction, ...]


@dataclass(frozen=True)
class Height:
    loinc: Codes
    adult_max_age_days: Fraction
    child_max_age_days: Fraction


@dataclass(frozen=True)
class Weight(Height):
    child_age_below: Fraction


@dataclass(frozen=True)
class Range:
    low: Fraction
    high: Fraction


@dataclass(frozen=True)
class CockcroftGault:
    age_from: Fraction
    age_constant: Fraction
    divisor: Fraction
    female_factor: Fraction
    obesity_bmi_from: Fraction
    adjusted_weight_fraction: Fraction


@dataclass(frozen=True)
class IdealBodyWeight:
    male_base_kg: Fraction
    female_base_kg: Fraction
    kg_per_inch_over: Fraction
    base_height_in: Fraction
    cm_per_inch: Fraction


@dataclass(frozen=True)
class CkdEpi2021:
    age_from: Fraction
    constant: Fraction
    kappa_female: Fraction
    kappa_male: Fraction
    alpha_female: Fraction
    alpha_male: Fraction
    exponent_above: Fraction
    age_base: Fraction
    female_factor: Fraction


@dataclass(frozen=True)
class BedsideSchwartz:
    age_from: Fraction
    age_below: Fraction
    k: Fraction


@dataclass(frozen=True)
class CkdStages:
    icd10: Mapping[str, Fraction]
    snomed: Mapping[str, Fraction]
    source: str


@dataclass(frozen=True)
class Renal:
    egfr_loinc: Codes
    crcl_loinc: Codes
    creatinine_loinc: Codes
    creatinine_default_unit: Mapping[str, str]
    creatinine_mg_dl_units: Codes
    creatinine_umol_l_units: Codes
    umol_l_per_mg_dl: Fraction
    rate_units: Codes
    plausible_creatinine_mg_dl: Range
    plausible_rate_ml_min_high: Fraction
    max_age_days: Fraction
    stale_after_days: Fraction
    same_time_window_days: Fraction
    bounded_normal_from: Fraction
    round_to: Fraction
    band_mild_from: Fraction
    band_normal_above: Fraction
    band_moderate_from: Fraction
    esrd_below: Fraction
    cap_fraction: Mapping[str, Fraction]
    severe_cap_mg_day: Fraction
    dialysis_cap_mg_day: Fraction
    cockcroft_gault: CockcroftGault
    ideal_body_weight: IdealBodyWeight
    ckd_epi_2021: CkdEpi2021
    bedside_schwartz: BedsideSchwartz
    ckd_stage_ml_min: CkdStages


@dataclass(frozen=True)
class ConditionCodes:
    icd10: Codes
    snomed: Codes
    words: Codes


@dataclass(frozen=True)
class Dialysis(ConditionCodes):
    procedure_snomed: Codes
    procedure_words: Codes
    procedure_max_age_days: Fraction
    ongoing_statuses: Codes
    procedure_excluded_statuses: Codes


@dataclass(frozen=True)
class Ckd:
    icd10_prefix: str
    words: Codes


@dataclass(frozen=True)
class Pregnancy:
    observation_loinc: Codes
    pregnant_snomed: Codes
    observation_max_age_days: Fraction
    words: Codes


@dataclass(frozen=True)
class Breastfeeding(ConditionCodes):
    observation_max_age_days: Fraction
    negation_words: Codes


@dataclass(frozen=True)
class AlcoholUseDisorder:
    icd10_prefix: str
    icd10_remission: Codes
    snomed: Codes
    words: Codes


@dataclass(frozen=True)
class PatientContext:
    loinc_system: str
    icd10_systems: Codes
    usable_result_statuses: Codes
    condition_active_statuses: Codes
    condition_excluded_verification: Codes
    weight: Weight
    height: Height
    renal: Renal
    dialysis: Dialysis
    kidney_transplant: ConditionCodes
    ckd: Ckd
    pregnancy: Pregnancy
    breastfeeding: Breastfeeding
    alcohol_use_disorder: AlcoholUseDisorder
    older_age: Fraction


@dataclass(frozen=True)
class History:
    gap_days: Fraction


@dataclass(frozen=True)
class InteractionClass:
    label: str
    one: str
    effect: str
    source: str
    ingredients: Codes
    atc_prefixes: Codes = ()
    suffixes: Codes = ()


@dataclass(frozen=True)
class AtcIngredients:
    source: str
    codes: Mapping[str, str]


@dataclass(frozen=True)
class Brands:
    source: str
    names: Mapping[str, Codes]


@dataclass(frozen=True)
class CnsActive:
    source: str
    older_age: Fraction
    min_other_drugs: Fraction
    # a class is its ingredients, or "from <interaction rule id>" (that class's ingredients)
    classes: Mapping[str, Codes | str]
    atc_prefixes: Mapping[str, Codes]


@dataclass(frozen=True)
class SeverityMeasure:
    """What a rule measures to grade its severity (``rules.<id>.raise``), for people."""
    text: str
    unit: str | None = None
