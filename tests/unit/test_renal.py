"""service/clinical/renal.py (Cockcroft-Gault, body weights, rounding and bands, caps) and
service/facts/renal.py (reading results, bounded values, freshness, the one renal value,
dialysis/ESRD and CKD evidence)."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction as F
from typing import Any

import pytest

from service.clinical.renal import (
    RenalInputError,
    adjusted_body_weight_kg,
    band_of,
    bmi,
    cockcroft_gault,
    ideal_body_weight_kg,
    renal_cap,
    round_renal,
)
from service.facts.patient import patient_facts
from service.facts.renal import read_renal
from service.knowledge import load
from service.model import AgeFacts, PatientFacts
from service.wording import renal_cap_text
from tests.support.context_builders import (
    CREAT_UMOL,
    condition,
    crcl,
    creatinine,
    dialysis_procedure,
    egfr,
    height,
    obs,
    weight,
)

KB = load()
RENAL = KB.typed.patient_context.renal
NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def pairs(*resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{r['resourceType']}/{r['id']}", r) for r in resources]


def adult(age: int = 60, sex: str | None = "male", kg: Any = 72, cm: Any = None,
          partial: bool = False) -> PatientFacts:
    return PatientFacts(
        ref="Patient/pat-1",
        age=AgeFacts(F(age - 1 if partial else age), F(age), partial),
        sex=sex, weight_kg=F(kg) if kg is not None else None,
        weight_ref="Observation/w" if kg is not None else None,
        height_cm=F(cm) if cm is not None else None,
        height_ref="Observation/h" if cm is not None else None,
    )


# --- formulas -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "age,kg,scr,female,expected",
    [
        pytest.param(60, 72, F(1), False, F(80), id="cg_male_60y_72kg_scr1_is_80"),
        pytest.param(60, 72, F(1), True, F(68), id="cg_female_factor_0_85_is_68"),
        pytest.param(40, 70, F(6, 5), False, F(100 * 70) / (72 * F(6, 5)),
                     id="cg_40y_70kg_scr1_2"),
        pytest.param(80, 50, F(3, 2), True, F(60 * 50) / (72 * F(3, 2)) * F(85, 100),
                     id="cg_female_80y_50kg_scr1_5"),
    ],
)
def test_cockcroft_gault_reference_values(age, kg, scr, female, expected):
    assert cockcroft_gault(F(age), F(kg), scr, female, RENAL.cockcroft_gault) == expected


def test_cockcroft_gault_reference_40y_is_81():
    value = cockcroft_gault(F(40), F(70), F(6, 5), False, RENAL.cockcroft_gault)
    assert round_renal(value, RENAL.round_to) == F(810, 10)


@pytest.mark.parametrize(
    "value,unit,code,expected",
    [
        pytest.param(1.0, "mg/dL", "2160-0", F(80), id="mg_dl"),
        pytest.param(88.4, "umol/L", "14682-9", F(80), id="umol_l_88_4_is_1_mg_dl"),
        pytest.param(176.8, "umol/L", "14682-9", F(40), id="umol_l_176_8_is_2_mg_dl"),
        pytest.param(88.4, None, CREAT_UMOL, F(80), id="no_unit_loinc_moles_gives_umol"),
        pytest.param(1.0, None, "2160-0", F(80), id="no_unit_loinc_mass_gives_mg_dl"),
    ],
)
def test_cockcroft_gault_from_results_in_both_units(value, unit, code, expected):
    facts = read_renal(pairs(creatinine(value, unit, code=code)), adult(), NOW, KB)
    assert facts.value is not None
    assert facts.value.source == "cockcroft-gault"
    assert facts.value.value_ml_min == expected


def test_unknown_sex_uses_female_factor_and_says_so():
    male = read_renal(pairs(creatinine(1.0)), adult(sex="male"), NOW, KB).value
    unknown = read_renal(pairs(creatinine(1.0)), adult(sex=None), NOW, KB).value
    other = read_renal(pairs(creatinine(1.0)), adult(sex="other"), NOW, KB).value
    assert male and unknown and other
    assert unknown.value_ml_min == other.value_ml_min == male.value_ml_min * F(85, 100) == 68
    assert "female factor used" in unknown.text
    assert "female factor" not in male.text


def test_ideal_body_weight_devine():
    # 170 cm = 66.93 in: 6.93 in over 60
    devine = RENAL.ideal_body_weight
    assert ideal_body_weight_kg(F(170), False, devine) == 50 + F(23, 10) * (
        F(170) / F(254, 100) - 60)
    assert ideal_body_weight_kg(F(170), True, devine) == F(455, 10) + F(23, 10) * (
        F(170) / F(254, 100) - 60)
    assert ideal_body_weight_kg(F(140), False, devine) == 50  # no negative increment below 60 in
    with pytest.raises(RenalInputError):
        ideal_body_weight_kg(F(0), False, devine)


def test_adjusted_weight_when_bmi_30_or_more():
    ibw = ideal_body_weight_kg(F(170), False, RENAL.ideal_body_weight)
    fraction = RENAL.cockcroft_gault.adjusted_weight_fraction
    assert adjusted_body_weight_kg(F(120), ibw, fraction) == ibw + F(4, 10) * (120 - ibw)
    facts = read_renal(pairs(creatinine(1.0)), adult(kg=120, cm=170), NOW, KB)
    value = facts.value
    assert value is not None
    expected = (140 - 60) * (ibw + F(4, 10) * (120 - ibw)) / 72
    assert value.value_ml_min == expected
    assert "adjusted weight 87.6 kg" in value.text and "BMI 41.5" in value.text
    assert value.refs == ("Observation/" + facts.candidates[0].refs[0].split("/")[1],
                          "Observation/w", "Observation/h")


def test_actual_weight_below_bmi_30_even_with_height():
    assert bmi(F(86), F(170)) < 30
    value = read_renal(pairs(creatinine(1.0)), adult(kg=86, cm=170), NOW, KB).value
    assert value is not None and "actual weight 86 kg" in value.text
    assert value.value_ml_min == F(80 * 86, 72)
    assert "Observation/h" not in value.refs


def test_bmi_exactly_30_uses_adjusted_weight():
    # 1.7 m: BMI 30 at 86.7 kg
    value = read_renal(pairs(creatinine(1.0)), adult(kg=86.7, cm=170), NOW, KB).value
    assert value is not None and "adjusted weight" in value.text


@pytest.mark.parametrize(
    "age,kg,scr",
    [pytest.param(17, 60, F(1), id="under_18"), pytest.param(60, 0, F(1), id="zero_weight"),
     pytest.param(60, 70, F(0), id="zero_creatinine"),
     pytest.param(140, 70, F(1), id="age_140")],
)
def test_cockcroft_gault_refuses_out_of_range(age, kg, scr):
    with pytest.raises(RenalInputError):
        cockcroft_gault(F(age), F(kg), scr, False, RENAL.cockcroft_gault)


def test_cg_not_computed_without_weight_and_says_why():
    # round 2: CKD-EPI 2021 stands in (60, male, 1.0 mg/dL: 86.2)
    facts = read_renal(pairs(creatinine(1.0)), adult(kg=None), NOW, KB)
    assert facts.value is not None and facts.value.source == "ckd-epi-2021"
    assert facts.value.rounded_ml_min == F("86.2")
    assert any("no recent weight" in n for n in facts.notes)


def test_cg_partial_birth_date_uses_older_end():
    value = read_renal(pairs(creatinine(1.0)), adult(age=70, partial=True), NOW, KB).value
    assert value is not None and value.value_ml_min == F(70 * 72, 72)
    assert "older end of a partial birth date" in value.text
    assert "overestimate clearance" in value.text


def test_children_get_egfr_only():
    facts = read_renal(pairs(creatinine(0.5), crcl(40), egfr(70)), adult(age=10), NOW, KB,
                       egfr_only=True)
    assert facts.value is not None and facts.value.source == "egfr"
    assert [c.source for c in facts.candidates] == ["egfr"]


# --- rounding and bands -------------------------------------------------------------------

@pytest.mark.parametrize(
    "value,rounded,band",
    [
        pytest.param("80", "80", "mild", id="exactly_80_mild"),
        pytest.param("80.04", "80", "mild", id="hair_above_80_rounds_to_80_mild"),
        pytest.param("80.05", "80.1", "normal", id="80_05_rounds_up_normal"),
        pytest.param("50", "50", "mild", id="exactly_50_mild"),
        pytest.param("49.96", "50", "mild", id="hair_below_50_rounds_to_50_mild"),
        pytest.param("49.94", "49.9", "moderate", id="49_94_moderate"),
        pytest.param("30", "30", "moderate", id="exactly_30_moderate"),
        pytest.param("29.95", "30", "moderate", id="29_95_rounds_to_30_moderate"),
        pytest.param("29.94", "29.9", "severe", id="29_94_severe"),
        pytest.param("15", "15", "severe", id="exactly_15_severe"),
        pytest.param("14.94", "14.9", "esrd", id="below_15_esrd"),
    ],
)
def test_round_then_band(value, rounded, band):
    r = round_renal(F(value), RENAL.round_to)
    assert r == F(rounded)
    assert band_of(r, RENAL) == band


@pytest.mark.parametrize(
    "raw,band",
    [
        pytest.param(49.99999999999999, "mild", id="float_hair_below_50"),
        pytest.param(50.00000000000001, "mild", id="float_hair_above_50"),
        pytest.param(29.999999999999996, "moderate", id="float_hair_below_30"),
        pytest.param(80.00000000000001, "mild", id="float_hair_above_80"),
        pytest.param(0.1 + 0.2 + 79.7, "mild", id="float_sum_80"),
    ],
)
def test_float_results_are_rounded_before_comparing(raw, band):
    facts = read_renal(pairs(crcl(raw)), adult(), NOW, KB)
    assert facts.value is not None and facts.value.band == band


def test_cg_arithmetic_hair_below_band_edge_is_rounded():
    # (140 - 65) x 56.4705 x 0.85 / 72 = 49.99992...: a hair below the edge
    value = cockcroft_gault(F(65), F("56.4705"), F(1), True, RENAL.cockcroft_gault)
    assert 49.999 < value < 50
    assert band_of(round_renal(value, RENAL.round_to), RENAL) == "mild"


@pytest.mark.parametrize(
    "band,base,cap",
    [
        pytest.param("mild", 80, F(160, 3), id="mild_two_thirds_of_80_is_53_3"),
        pytest.param("moderate", 80, F(40), id="moderate_half_of_80"),
        pytest.param("mild", 100, F(200, 3), id="mild_uk_100"),
        pytest.param("moderate", 40, F(20), id="moderate_child_cap_40"),
        pytest.param("severe", 80, F(5), id="severe_5"),
        pytest.param("esrd", 80, F(5), id="esrd_5"),
    ],
)
def test_renal_cap_scales_the_applicable_cap(band, base, cap):
    result = renal_cap(band, F(base), RENAL)
    assert result is not None and result.cap_mg_day == cap
    assert renal_cap("normal", F(base), RENAL) is None


def test_renal_cap_text():
    cap = renal_cap("moderate", F(80), RENAL)
    assert cap is not None and renal_cap_text(
        cap.band, cap.cap_mg_day, cap.fraction, cap.of_mg_day) == (
        "cap 40 mg/day (half of 80 mg/day)")
    mild = renal_cap("mild", F(80), RENAL)
    assert mild is not None and renal_cap_text(
        mild.band, mild.cap_mg_day, mild.fraction, mild.of_mg_day) == (
        "cap 53.3 mg/day (two thirds of 80 mg/day)")


# --- reading results ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "resource,band,rounded",
    [
        pytest.param(egfr(60, comparator=">"), "normal", "60", id="gt60_quantity_normal"),
        pytest.param(egfr(None, string=">60"), "normal", "60", id="gt60_string_normal"),
        pytest.param(egfr(None, string="> 90 mL/min/1.73m2"), "normal", "90",
                     id="gt90_string_with_unit_normal"),
        pytest.param(egfr(45, comparator=">"), "moderate", "45", id="gt45_counts_as_45"),
        pytest.param(egfr(None, string=">45"), "moderate", "45", id="gt45_string"),
        pytest.param(egfr(15, comparator="<"), "esrd", "14.9", id="lt15_is_esrd"),
        pytest.param(egfr(None, string="<15"), "esrd", "14.9", id="lt15_string_is_esrd"),
        pytest.param(egfr(30, comparator="<"), "severe", "29.9", id="lt30_is_severe"),
        pytest.param(egfr(None, string="<=30"), "moderate", "30", id="le30_counts_as_30"),
    ],
)
def test_bounded_results(resource, band, rounded):
    facts = read_renal(pairs(resource), adult(), NOW, KB)
    assert facts.value is not None
    assert facts.value.band == band
    assert facts.value.rounded_ml_min == F(rounded)


def test_bounded_normal_detail_says_why():
    value = read_renal(pairs(egfr(60, comparator=">")), adult(), NOW, KB).value
    assert value is not None and "places the patient in the normal band" in value.text


@pytest.mark.parametrize(
    "status,used",
    [
        pytest.param("final", True, id="final"),
        pytest.param("amended", True, id="amended"),
        pytest.param("corrected", True, id="corrected"),
        pytest.param("preliminary", True, id="preliminary"),
        pytest.param("registered", False, id="registered"),
        pytest.param("cancelled", False, id="cancelled"),
        pytest.param("entered-in-error", False, id="entered_in_error"),
        pytest.param("unknown", False, id="unknown"),
    ],
)
def test_result_statuses(status, used):
    facts = read_renal(pairs(egfr(40, status=status)), adult(), NOW, KB)
    assert (facts.value is not None) is used
    if not used:
        assert any("result status" in n for n in facts.notes)


@pytest.mark.parametrize(
    "when,used,stale",
    [
        pytest.param("2026-11-20", True, False, id="recent"),
        pytest.param("2026-08-27T10:00:00Z", True, False, id="exactly_90_days_not_stale"),
        pytest.param("2026-08-27T09:00:00Z", True, True, id="just_over_90_days_stale"),
        pytest.param("2025-11-25T10:00:00Z", True, True, id="exactly_365_days_used"),
        pytest.param("2025-11-25T09:00:00Z", False, False, id="over_365_days_not_used"),
    ],
)
def test_freshness(when, used, stale):
    facts = read_renal(pairs(egfr(40, when=when)), adult(), NOW, KB)
    assert (facts.value is not None) is used
    if used:
        assert facts.value is not None and facts.value.stale is stale
    else:
        assert any("older than 365 days" in n for n in facts.notes)


def test_result_time_falls_back_to_issued():
    facts = read_renal(pairs(egfr(40, when="", issued="2026-11-21T08:00:00Z")), adult(), NOW, KB)
    assert facts.value is not None and facts.value.at == datetime(2026, 11, 21, 8, tzinfo=UTC)


def test_result_without_date_is_not_used():
    facts = read_renal(pairs(egfr(40, when="")), adult(), NOW, KB)
    assert facts.value is None and any("no date" in n for n in facts.notes)


def test_unknown_units_are_not_used():
    facts = read_renal(pairs(obs("62238-1", 1.1, "mL/s"), creatinine(1.0, "mmol/mol")),
                       adult(), NOW, KB)
    assert facts.value is None
    assert len(facts.notes) == 2


# --- the one renal value ------------------------------------------------------------------

def test_more_restrictive_band_within_7_days_wins():
    facts = read_renal(pairs(egfr(70, when="2026-11-24"), crcl(45, when="2026-11-18")),
                       adult(), NOW, KB)
    assert facts.value is not None and facts.value.source == "crcl"
    assert facts.value.band == "moderate"


def test_older_candidates_count_only_when_nothing_newer():
    facts = read_renal(pairs(egfr(70, when="2026-11-24"), crcl(25, when="2026-11-10")),
                       adult(), NOW, KB)
    assert facts.value is not None and facts.value.source == "egfr"
    only_old = read_renal(pairs(crcl(25, when="2026-11-10")), adult(), NOW, KB)
    assert only_old.value is not None and only_old.value.band == "severe"


def test_computed_and_reported_compete():
    # CG: 80 x 72 / (72 x 2) = 40 (moderate) beats eGFR 65 (mild) on the same day
    facts = read_renal(pairs(egfr(65), creatinine(2.0)), adult(), NOW, KB)
    assert facts.value is not None and facts.value.source == "cockcroft-gault"
    assert facts.value.rounded_ml_min == 40
    assert "CrCl 40 mL/min on 2026-11-20 (Cockcroft-Gault, actual weight 72 kg, creatinine " \
           "2 mg/dL, age 60, male)" == facts.value.text


def test_egfr_detail_says_stand_in():
    value = read_renal(pairs(egfr(42)), adult(), NOW, KB).value
    assert value is not None
    assert value.text == ("eGFR 42 mL/min/1.73 m2 on 2026-11-20 (reported eGFR, used as a "
                          "stand-in for creatinine clearance)")


# --- dialysis, ESRD, CKD ------------------------------------------------------------------

@pytest.mark.parametrize(
    "resource,esrd",
    [
        pytest.param(condition("N18.6"), True, id="icd_n18_6"),
        pytest.param(condition("Z99.2"), True, id="icd_z99_2"),
        pytest.param(condition("N18.5"), True, id="icd_n18_5"),
        pytest.param(condition("N186"), True, id="icd_without_dot"),
        pytest.param(condition("46177005", "http://snomed.info/sct"), True, id="snomed_esrd"),
        pytest.param(condition("433146000", "http://snomed.info/sct"), True, id="snomed_433146000"),
        pytest.param(condition(None, text="On peritoneal dialysis"), True, id="text_dialysis"),
        pytest.param(condition(None, text="ESRD"), True, id="text_esrd"),
        pytest.param(condition(None, text="Kidney failure"), True, id="text_kidney_failure"),
        pytest.param(condition("N18.6", clinical="resolved"), False, id="resolved_not_counted"),
        pytest.param(condition("N18.6", clinical="inactive"), False, id="inactive_not_counted"),
        pytest.param(condition("N18.6", clinical="recurrence"), True, id="recurrence_counts"),
        pytest.param(condition("N18.6", clinical="relapse"), True, id="relapse_counts"),
        pytest.param(condition("N18.6", clinical=None), True, id="no_clinical_status_counts"),
        pytest.param(condition("N18.6", verification="refuted"), False, id="refuted"),
        pytest.param(condition("N18.6", verification="entered-in-error"), False,
                     id="entered_in_error"),
        pytest.param(condition("N18.6", verification="provisional"), True, id="provisional"),
        pytest.param(condition("N18.3"), False, id="ckd_stage_3_is_not_esrd"),
        pytest.param(dialysis_procedure("2026-10-01"), True, id="procedure_55_days"),
        pytest.param(dialysis_procedure("2026-08-27T10:00:00Z"), True,
                     id="procedure_exactly_90_days"),
        pytest.param(dialysis_procedure("2026-08-01"), False, id="procedure_116_days"),
        pytest.param(dialysis_procedure("2026-11-01", status="not-done"), False,
                     id="procedure_not_done"),
    ],
)
def test_dialysis_and_esrd_evidence(resource, esrd):
    facts = read_renal(pairs(resource), adult(), NOW, KB)
    assert facts.esrd is esrd
    if esrd:
        assert facts.refs == (f"{resource['resourceType']}/{resource['id']}",)


def test_value_below_15_is_esrd():
    facts = read_renal(pairs(egfr(12)), adult(), NOW, KB)
    assert facts.esrd and facts.band == "esrd"


@pytest.mark.parametrize(
    "resource,ckd",
    [
        pytest.param(condition("N18.3"), True, id="n18_3"),
        pytest.param(condition("N18.9"), True, id="n18_9"),
        pytest.param(condition(None, text="Chronic kidney disease stage 3a"), True, id="text"),
        pytest.param(condition("N18.3", clinical="resolved"), False, id="resolved"),
        pytest.param(condition("I10"), False, id="hypertension"),
    ],
)
def test_chronic_kidney_disease(resource, ckd):
    assert bool(read_renal(pairs(resource), adult(), NOW, KB).ckd) is ckd


# --- weight and height from the patient context -------------------------------------------

@pytest.mark.parametrize(
    "resource,expected",
    [
        pytest.param(weight(70), F(70), id="kg"),
        pytest.param(weight(70000, unit="g"), F(70), id="grams"),
        pytest.param(weight(154, unit="[lb_av]"), F(154) * F("0.45359237"), id="pounds"),
        pytest.param(weight(70, when="2025-11-20"), None, id="older_than_365_days"),
        pytest.param(weight(70, status="cancelled"), None, id="cancelled"),
        pytest.param(weight(70, unit="stone"), None, id="unknown_unit"),
    ],
)
def test_adult_weight(resource, expected):
    facts = patient_facts({"birthDate": "1960-01-01", "gender": "male"}, "Patient/pat-1", NOW,
                          pairs(resource), NOW, KB)
    assert facts.weight_kg == expected


def test_newest_weight_wins_and_children_need_30_days():
    older, newer = weight(70, when="2026-10-01"), weight(72, when="2026-11-10")
    adult_facts = patient_facts({"birthDate": "1960-01-01"}, "Patient/p", NOW,
                                pairs(older, newer), NOW, KB)
    assert adult_facts.weight_kg == 72
    assert adult_facts.weight_ref == f"Observation/{newer['id']}"
    child = patient_facts({"birthDate": "2018-01-01"}, "Patient/p", NOW,
                          pairs(weight(20, when="2026-10-20")), NOW, KB)
    assert child.weight_kg is None
    child_fresh = patient_facts({"birthDate": "2018-01-01"}, "Patient/p", NOW,
                                pairs(weight(20, when="2026-10-26T10:00:00Z")), NOW, KB)
    assert child_fresh.weight_kg == 20


@pytest.mark.parametrize(
    "resource,expected",
    [
        pytest.param(height(170), F(170), id="cm"),
        pytest.param(height(1.7, unit="m"), F(170), id="metres"),
        pytest.param(height(67, unit="[in_i]"), F(67) * F("2.54"), id="inches"),
    ],
)
def test_height_units(resource, expected):
    facts = patient_facts({"birthDate": "1960-01-01"}, "Patient/p", NOW, pairs(resource), NOW, KB)
    assert facts.height_cm == expected


@pytest.mark.parametrize(
    "unit",
    [pytest.param("mL/min/1.73 m²", id="superscript"), pytest.param("ml/min/1.73sq.m", id="sqm"),
     pytest.param("mL/min", id="plain")],
)
def test_egfr_unit_spellings(unit):
    resource = egfr(40)
    resource["valueQuantity"] = {"value": 40, "unit": unit}
    facts = read_renal(pairs(resource), adult(), NOW, KB)
    assert facts.value is not None and facts.value.rounded_ml_min == 40


@pytest.mark.parametrize(
    "resource,pregnant",
    [
        pytest.param({**obs("82810-3", None), "valueCodeableConcept": {"coding": [
            {"system": "http://snomed.info/sct", "code": "77386006"}]}}, True,
            id="observation_pregnant"),
        pytest.param({**obs("82810-3", None, when="2025-12-01"), "valueCodeableConcept": {
            "coding": [{"system": "http://snomed.info/sct", "code": "77386006"}]}}, False,
            id="observation_over_300_days"),
        pytest.param(condition("77386006", "http://snomed.info/sct"), True, id="condition_code"),
        pytest.param(condition(None, text="Pregnancy, second trimester"), True,
                     id="condition_text"),
        pytest.param(condition(None, text="Pregnancy", clinical="resolved"), False,
                     id="resolved_condition"),
    ],
)
def test_pregnancy_evidence(resource, pregnant):
    facts = patient_facts({"birthDate": "1990-01-01", "gender": "female"}, "Patient/p", NOW,
                          pairs(resource), NOW, KB)
    assert bool(facts.pregnancy_refs) is pregnant


def test_creatinine_in_micromol_is_written_for_people():
    value = read_renal(pairs(creatinine(110, "umol/L")), adult(), NOW, KB).value
    assert value is not None
    assert "creatinine 110 micromol/L = 1.24 mg/dL" in value.text
    assert "umol" not in value.text


@pytest.mark.parametrize("code,value,unit", [
    ("2160-0", 0.01, "mg/dL"), ("2160-0", 45, "mg/dL"), ("14682-9", 5, "umol/L"),
    ("33914-3", 900, "mL/min/{1.73_m2}"),
], ids=["creatinine_0_01", "creatinine_45", "creatinine_5_umol", "egfr_900"])
def test_implausible_results_are_not_used_and_said(code: str, value: float, unit: str) -> None:
    kb = load()
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
           "effectiveDateTime": "2026-11-20T08:00:00Z",
           "valueQuantity": {"value": value, "unit": unit}}
    wt = {"resourceType": "Observation", "status": "final",
          "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
          "effectiveDateTime": "2026-11-20T08:00:00Z",
          "valueQuantity": {"value": 70, "unit": "kg"}}
    at = datetime(2026, 11, 25, 10, tzinfo=UTC)
    ctx = [("Observation/x", obs), ("Observation/wt", wt)]
    pf = patient_facts({"birthDate": "1950-01-01", "gender": "male"}, "Patient/p", at, ctx, at,
                       kb)
    renal = read_renal(ctx, pf, at, kb)
    assert renal.value is None
    assert any("plausible" in n for n in renal.notes)
