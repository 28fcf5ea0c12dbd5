"""Children, intrathecal, other medicines, CNS burden, pregnancy and taper plans (issue 4)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.builders import (
    IT_ROUTE,
    SNOMED,
    UCUM,
    by_rule,
    dosage,
    it_dose,
    it_order,
    order,
    parameters,
    patient,
    rule_ids,
)
from tests.support.checks import run


def med(text: str, id: str, status: str = "active", rtype: str = "MedicationRequest"
        ) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": rtype, "id": id, "status": status,
                         "subject": {"reference": "Patient/pat-1"},
                         "medicationCodeableConcept": {"text": text}}
    if rtype == "MedicationRequest":
        r["intent"] = "order"
    return r


# --- children ---------------------------------------------------------------------------

NO_WEIGHT = {"pediatric.weight-unknown": "low"}
CHILD_CASES = [
    # id, birthDate, daily (mg, as 4 doses), weight, profile, expected {rule: severity}
    # (no weight is given: round 2 says so with pediatric.weight-unknown)
    ("us_age6_40mg_at_cap", "2020-06-01", 40, None, "us",
     {**NO_WEIGHT, "pediatric.off-label": "low"}),
    ("us_age6_45mg_over_cap", "2020-06-01", 45, None, "us",
     {**NO_WEIGHT, "pediatric.off-label": "low", "pediatric.age-cap": "moderate"}),
    ("us_age6_62_5mg_high", "2020-06-01", 62.5, None, "us",
     {**NO_WEIGHT, "pediatric.off-label": "low", "pediatric.age-cap": "high",
      "oral.max-single": None}),
    ("us_age10_60mg_at_cap", "2016-06-01", 60, None, "us",
     {**NO_WEIGHT, "pediatric.off-label": "low"}),
    ("us_age10_70mg", "2016-06-01", 70, None, "us",
     {**NO_WEIGHT, "pediatric.off-label": "low", "pediatric.age-cap": "moderate"}),
    ("us_age12_adult", "2014-06-01", 70, None, "us", {}),
    ("uk_age14_70mg", "2012-06-01", 70, None, "uk", {**NO_WEIGHT, "pediatric.age-cap": "moderate"}),
    ("uk_age18_adult", "2008-06-01", 70, None, "uk", {}),
]


@pytest.mark.parametrize("case", CHILD_CASES, ids=[c[0] for c in CHILD_CASES])
def test_pediatric_caps(case: tuple[Any, ...]) -> None:
    _id, born, daily, _weight, profile, expected = case
    body = parameters(order(dosage(daily / 4, "mg", 4)), pat=patient(born), profile=profile)
    result = run(body, profile)
    ped = {r for r in rule_ids(result) if r.startswith("pediatric.")}
    assert ped == {r for r, s in expected.items() if r.startswith("pediatric.")}
    for rule, severity in expected.items():
        if severity:
            assert by_rule(result, rule)["severity"] == severity


def test_pediatric_age_cap_detail_and_partial_birth_date() -> None:
    # born "2018": aged 7 or 8 on 2026-11-25; the younger age makes the < 8 cap (40) fire
    result = run(parameters(order(dosage(12.5, "mg", 4)), pat=patient("2018")))
    di = by_rule(result, "pediatric.age-cap")
    assert di["severity"] == "moderate"
    assert "50 mg/day" in di["detail"] and "40 mg/day" in di["detail"]
    assert "partial birth date" in di["detail"]


# --- intrathecal ------------------------------------------------------------------------

IT_CASES = [
    ("bolus_100ug_ok", it_dose(100, count=1), set(), {}),
    ("bolus_150ug_high", it_dose(150, count=1), {"intrathecal.bolus"},
     {"intrathecal.bolus": "high"}),
    ("daily_1000ug_ok", it_dose(1000, frequency=1, period=1, periodUnit="d"), set(), {}),
    ("daily_1200ug_moderate", it_dose(600, frequency=2, period=1, periodUnit="d"),
     {"intrathecal.max-daily"}, {"intrathecal.max-daily": "moderate"}),
    ("daily_2500ug_high", it_dose(2500, frequency=1, period=1, periodUnit="d"),
     {"intrathecal.max-daily"}, {"intrathecal.max-daily": "high"}),
    ("mg_written_0_5mg_low", it_dose(0.5, "mg", frequency=1, period=1, periodUnit="d"),
     {"intrathecal.mg-unit"}, {"intrathecal.mg-unit": "low"}),
    ("mg_written_50mg_high_blocks_rest", it_dose(50, "mg", frequency=1, period=1,
                                                 periodUnit="d"),
     {"intrathecal.mg-unit"}, {"intrathecal.mg-unit": "high"}),
]


@pytest.mark.parametrize("case", IT_CASES, ids=[c[0] for c in IT_CASES])
def test_intrathecal_rules(case: tuple[Any, ...]) -> None:
    _id, dose, expected_ids, severities = case
    result = run(parameters(it_order(dose)))
    ids = set(rule_ids(result))
    assert ids == expected_ids
    assert not any(r.startswith(("oral.", "renal.", "withdrawal.")) for r in ids)
    for rule, severity in severities.items():
        assert by_rule(result, rule)["severity"] == severity


def test_intrathecal_rate_per_hour_becomes_daily_micrograms() -> None:
    rate = {"route": IT_ROUTE, "doseAndRate": [{"rateQuantity": {
        "value": 50, "unit": "ug/h", "system": UCUM, "code": "ug/h"}}]}
    result = run(parameters(it_order(rate)))
    di = by_rule(result, "intrathecal.max-daily")
    assert di["severity"] == "moderate"
    assert "1200 micrograms" in di["detail"]


def test_intrathecal_product_without_coded_route_and_child_under_4() -> None:
    d = dosage(50, "ug", None)
    d["timing"] = {"repeat": {"count": 1}}
    result = run(parameters(it_order(d), pat=patient("2024-01-01")))
    assert rule_ids(result) == ["intrathecal.age"]


def test_intrathecal_with_active_oral_baclofen() -> None:
    oral_ctx = order(dosage(10, "mg", 3), id="old-oral", status="active")
    result = run(parameters(it_order(it_dose(300, frequency=1, period=1, periodUnit="d")),
                            context=[oral_ctx]))
    di = by_rule(result, "intrathecal.with-oral")
    assert di["severity"] == "low"
    assert [r["reference"] for r in di["implicated"]] == [
        "MedicationRequest/ord-1", "MedicationRequest/old-oral"]


# --- other medicines --------------------------------------------------------------------

INTERACTION_CASES = [
    ("opioid_oxycodone", "oxyCODONE 5 MG Oral Tablet", "interaction.opioid", "moderate"),
    ("sedative_gabapentin", "gabapentin 300 MG Oral Capsule", "interaction.sedative",
     "moderate"),
    ("relaxant_tizanidine", "tizanidine 4 MG", "interaction.muscle-relaxant", "moderate"),
    ("tca_amitriptyline", "amitriptyline 10 MG", "interaction.tricyclic", "moderate"),
    ("maoi_selegiline", "selegiline 5 MG", "interaction.maoi", "moderate"),
    ("levodopa_sinemet", "carbidopa 25 MG / levodopa 100 MG", "interaction.levodopa",
     "moderate"),
    ("lithium", "lithium carbonate 300 MG", "interaction.lithium", "moderate"),
    ("ace_lisinopril", "lisinopril 10 MG", "interaction.antihypertensive", "low"),
    ("arb_by_suffix", "fimasartan 60 MG", "interaction.antihypertensive", "low"),
]


@pytest.mark.parametrize("case", INTERACTION_CASES, ids=[c[0] for c in INTERACTION_CASES])
def test_interaction_classes(case: tuple[str, str, str, str]) -> None:
    _id, text, rule, severity = case
    result = run(parameters(order(dosage(5, "mg", 3)), context=[med(text, "other-1")]))
    di = by_rule(result, rule)
    assert di["severity"] == severity
    assert di["code"]["coding"][0]["code"] == "DRG"
    assert [r["reference"] for r in di["implicated"]] == [
        "MedicationRequest/ord-1", "MedicationRequest/other-1"]


def test_stopped_and_unrelated_medicines_do_not_interact() -> None:
    ctx = [med("morphine 10 MG", "m1", status="stopped"), med("paracetamol 500 MG", "p1"),
           med("metformin", "s1", rtype="MedicationStatement")]
    result = run(parameters(order(dosage(5, "mg", 3)), context=ctx))
    assert rule_ids(result) == []


def test_one_finding_per_class_naming_every_drug() -> None:
    ctx = [med("morphine 10 MG", "m1"), med("fentanyl patch", "f1", rtype="MedicationStatement")]
    result = run(parameters(order(dosage(5, "mg", 3)), context=ctx))
    di = by_rule(result, "interaction.opioid")
    assert "fentanyl" in di["detail"] and "morphine" in di["detail"]
    assert len(di["implicated"]) == 3


def test_draft_of_interacting_drug_with_active_baclofen_implicates_draft_first() -> None:
    draft = med("tramadol 50 MG", "draft-tramadol", status="draft")
    active_baclofen = order(dosage(10, "mg", 3), id="bac-active", status="active")
    result = run(parameters(draft, context=[active_baclofen]))
    di = by_rule(result, "interaction.opioid")
    assert [r["reference"] for r in di["implicated"]] == [
        "MedicationRequest/draft-tramadol", "MedicationRequest/bac-active"]


def test_non_baclofen_draft_without_baclofen_is_information_only() -> None:
    result = run(parameters(med("tramadol 50 MG", "d1", status="draft")))
    assert rule_ids(result) == []
    oo = [e["resource"] for e in result["entry"]
          if e["resource"]["resourceType"] == "OperationOutcome"][0]
    assert oo["issue"][0]["severity"] == "information"


@pytest.mark.parametrize("born,others,fires", [
    ("1950-01-01", ["oxycodone 5 MG", "sertraline 50 MG"], True),
    ("1950-01-01", ["oxycodone 5 MG"], False),
    ("1970-01-01", ["oxycodone 5 MG", "sertraline 50 MG"], False),
    ("1950-01-01", ["quetiapine 25 MG", "levetiracetam 500 MG"], True),
], ids=["older_two_cns_fires", "older_one_cns", "younger_two_cns", "older_antipsychotic_aed"])
def test_geriatric_cns_burden(born: str, others: list[str], fires: bool) -> None:
    ctx = [med(t, f"m{i}") for i, t in enumerate(others)]
    result = run(parameters(order(dosage(5, "mg", 3)), pat=patient(born), context=ctx))
    assert ("geriatric.cns-burden" in rule_ids(result)) is fires
    if fires:
        di = by_rule(result, "geriatric.cns-burden")
        assert di["severity"] == "moderate" and "3 CNS-active drugs" in di["detail"]


# --- pregnancy --------------------------------------------------------------------------

def pregnancy_obs(date: str, status: str = "final") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "preg", "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": "82810-3"}]},
            "effectiveDateTime": date,
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "77386006"}]}}


@pytest.mark.parametrize("ctx,fires", [
    ([pregnancy_obs("2026-09-01")], True),
    ([pregnancy_obs("2025-09-01")], False),
    ([pregnancy_obs("2026-09-01", status="entered-in-error")], False),
    ([{"resourceType": "Condition", "id": "c1", "code": {"text": "Pregnancy, second trimester"},
       "subject": {"reference": "Patient/pat-1"},
       "clinicalStatus": {"coding": [{"code": "active"}]}}], True),
    ([{"resourceType": "Condition", "id": "c1", "code": {"text": "Pregnancy"},
       "subject": {"reference": "Patient/pat-1"},
       "verificationStatus": {"coding": [{"code": "refuted"}]}}], False),
], ids=["recent_observation", "observation_over_300_days", "entered_in_error",
        "active_condition_text", "refuted_condition"])
def test_pregnancy(ctx: list[dict[str, Any]], fires: bool) -> None:
    result = run(parameters(order(dosage(5, "mg", 3)), pat=patient("1995-01-01", "female"),
                            context=ctx))
    assert ("pregnancy" in rule_ids(result)) is fires
    if fires:
        di = by_rule(result, "pregnancy")
        assert di["severity"] == "low" and di["code"]["coding"][0]["code"] == "PREG"
        assert di["evidence"][0]["detail"][0]["reference"].endswith(ctx[0]["id"])


# --- taper plans ------------------------------------------------------------------------

def step(seq: int, dose: float, days: float) -> dict[str, Any]:
    d = dosage(dose, "mg", 3)
    d["sequence"] = seq
    d["timing"]["repeat"]["boundsDuration"] = {"value": days, "unit": "d", "system": UCUM,
                                               "code": "d"}
    return d


@pytest.mark.parametrize("days,severity", [(2, "moderate"), (6.99, "moderate"), (7, "low"),
                                           (13.5, "low"), (14, None)],
                         ids=["taper_4d", "taper_just_under_14d_split", "taper_14d_low_edge",
                              "taper_27d", "taper_28d_ok"])
def test_short_taper(days: float, severity: str | None) -> None:
    body = parameters(order(step(1, 10, days / 2), step(2, 5, days / 2)))
    result = run(body)
    if severity is None:
        assert "withdrawal.short-taper" not in rule_ids(result)
    else:
        assert by_rule(result, "withdrawal.short-taper")["severity"] == severity
