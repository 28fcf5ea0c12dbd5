"""Oral ceiling, frequency and duplicate rules (clinical-rules section 3): one row per rule and
boundary, checked through the real parse -> engine -> DetectedIssue path and validated."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.builders import (
    baclofen_concept,
    bundle,
    by_rule,
    dosage,
    issues,
    order,
    outcome,
    parameters,
    patient,
)
from tests.support.checks import found, found_ids, http_run, run


def once(dose: float, unit: str = "mg") -> dict[str, Any]:
    """A single dose (repeat.count 1, no frequency)."""
    return dosage(dose, unit, None, timing={"repeat": {"count": 1}})


def prn(dose: float, frequency: int) -> dict[str, Any]:
    return dosage(dose, "mg", frequency, asNeededBoolean=True)


MD, MS, PE, FQ = "oral.max-daily", "oral.max-single", "oral.probable-error", "oral.frequency"

CEILING_CASES = [
    # (dosage lines, profile, expected findings)
    pytest.param([dosage(20, "mg", 4)], "us", [], id="us-exactly-80-per-day-and-20-per-dose"),
    pytest.param([dosage(10, "mg", 3)], "us", [], id="us-usual-30-per-day"),
    pytest.param([dosage(27, "mg", 3)], "us", [(MD, "moderate"), (MS, "moderate")],
                 id="us-max-daily-81-moderate"),
    pytest.param([dosage(20, "mg", 5)], "us", [(MD, "moderate"), (FQ, "low")],
                 id="us-max-daily-exactly-100-still-moderate"),
    pytest.param([dosage(25.25, "mg", 4)], "us", [(MD, "high"), (MS, "moderate")],
                 id="us-max-daily-101-high"),
    pytest.param([dosage(20, "mg", 4), dosage(0.5, "mg", 1)], "us",
                 [(MD, "moderate"), (FQ, "low")],
                 id="us-max-daily-80.5-by-two-lines"),
    pytest.param([dosage(22.5, "mg", 4)], "us", [(MD, "moderate"), (MS, "moderate")],
                 id="us-22.5-mg-per-dose"),
    pytest.param([once(22.5)], "us", [(MS, "moderate")], id="us-max-single-22.5-once"),
    pytest.param([once(20)], "us", [], id="us-exactly-20-once"),
    pytest.param([dosage(25, "mg", 4)], "uk", [], id="uk-exactly-100-per-day-and-25-per-dose"),
    pytest.param([dosage(22.5, "mg", 4)], "uk", [], id="uk-22.5-mg-per-dose-is-fine"),
    pytest.param([dosage(26, "mg", 4)], "uk", [(MD, "moderate"), (MS, "moderate")],
                 id="uk-max-daily-104-moderate"),
    pytest.param([dosage(24, "mg", 5)], "uk", [(MD, "moderate"), (FQ, "low")],
                 id="uk-exactly-120-still-moderate"),
    pytest.param([dosage(24.25, "mg", 5)], "uk", [(MD, "high"), (FQ, "low")],
                 id="uk-max-daily-121.25-high"),
    pytest.param([once(25.5)], "uk", [(MS, "moderate")], id="uk-max-single-25.5"),
    pytest.param([once(80)], "us", [(MS, "moderate"), (PE, "high")],
                 id="probable-error-exactly-80-single"),
    pytest.param([once(79.5)], "us", [(MS, "moderate")], id="probable-error-79.5-single-no"),
    pytest.param([dosage(50, "mg", 4)], "us", [(MD, "high"), (MS, "moderate"), (PE, "high")],
                 id="probable-error-exactly-200-per-day"),
    pytest.param([dosage(49.75, "mg", 4)], "us", [(MD, "high"), (MS, "moderate")],
                 id="probable-error-199-per-day-no"),
    pytest.param([dosage(20, "mg", 4), dosage(20, "mg", 6)], "us",
                 [(MD, "high"), (PE, "high"), (FQ, "low")], id="probable-error-200-by-two-lines"),
    pytest.param([dosage(80, "mg", 1)], "uk", [(MS, "moderate"), (PE, "high"), (FQ, "low")],
                 id="uk-probable-error-80-once-a-day"),
    pytest.param([dosage(1, "g", 1, timing={"repeat": {"count": 1}})], "us",
                 [(MD, "high"), (MS, "moderate"), (PE, "high")], id="probable-error-1-g-once"),
]


@pytest.mark.parametrize(("lines", "profile", "expected"), CEILING_CASES)
def test_ceiling_rules(client, lines, profile, expected):
    result = http_run(client, parameters(order(*lines), profile=profile))
    assert found(result) == sorted(expected)


FREQUENCY_CASES = [
    pytest.param([dosage(15, "mg", 2)], True, id="30-per-day-twice-fires"),
    pytest.param([dosage(14.995, "mg", 2)], False, id="29.99-per-day-twice-no"),
    pytest.param([dosage(30, "mg", 1)], True, id="30-once-a-day-fires"),
    pytest.param([dosage(10, "mg", 3)], False, id="30-three-times-no"),
    pytest.param([dosage(5, "mg", 4)], False, id="four-times-no"),
    pytest.param([dosage(5, "mg", 5)], True, id="five-times-a-day-fires"),
    pytest.param([dosage(2.5, "mg", 1, period=4, period_unit="h")], True, id="every-4h-fires"),
    pytest.param([prn(15, 2)], False, id="as-needed-excluded"),
    pytest.param([prn(5, 6)], False, id="as-needed-six-times-excluded"),
    pytest.param([once(30)], False, id="single-dose-excluded"),
    pytest.param([dosage(10, "mg", None, timing={"code": {"text": "AM"}}),
                  dosage(20, "mg", None, timing={"code": {"text": "BED"}})], True,
                 id="10-morning-plus-20-night-fires"),
    pytest.param([dosage(15, "mg", 2), prn(10, 1)], True,
                 id="scheduled-30-twice-plus-prn-fires"),
    pytest.param([dosage(10, "mg", 2), prn(10, 2)], False,
                 id="scheduled-20-twice-plus-prn-no"),
]


@pytest.mark.parametrize(("lines", "fires"), FREQUENCY_CASES)
def test_frequency(client, lines, fires):
    result = http_run(client, parameters(order(*lines)))
    assert ("oral.frequency" in found_ids(result)) is fires
    if fires:
        di = by_rule(result, "oral.frequency")
        assert di["severity"] == "low"
        assert di["code"]["coding"][0]["code"] == "DOSEIVL"


def test_frequency_detail_for_morning_and_night():
    result = run(parameters(order(dosage(10, "mg", None, timing={"code": {"text": "AM"}}),
                                  dosage(20, "mg", None, timing={"code": {"text": "BED"}}))))
    detail = by_rule(result, "oral.frequency")["detail"]
    assert "30 mg/day" in detail and "twice a day" in detail


def test_max_daily_detail_names_ordered_limit_and_profile():
    di = by_rule(run(parameters(order(dosage(27, "mg", 3)))), "oral.max-daily")
    assert di["code"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "DOSEH",
        "display": "High Dose Alert"}
    assert "81 mg/day" in di["detail"]
    assert "27 mg three times a day" in di["detail"]
    assert "80 mg/day" in di["detail"] and "US labels" in di["detail"]


def test_uk_max_daily_detail_names_the_uk_limit():
    di = by_rule(run(parameters(order(dosage(26, "mg", 4))), "uk"), "oral.max-daily")
    assert "104 mg/day" in di["detail"] and "100 mg/day" in di["detail"]
    assert "UK SmPC" in di["detail"]


def test_max_single_detail():
    di = by_rule(run(parameters(order(dosage(22.5, "mg", 4)))), "oral.max-single")
    assert "22.5 mg" in di["detail"] and "20 mg" in di["detail"]
    # 90 mg/day cannot be given in doses of at most 20 mg four times a day
    assert "dividing" not in di["detail"]


def test_max_single_suggests_dividing_when_that_fits():
    di = by_rule(run(parameters(order(dosage(30, "mg", 2)))), "oral.max-single")
    assert "for example 20 mg three times a day (60 mg/day)" in di["detail"]
    di = by_rule(run(parameters(order(dosage(25, "mg", 3)))), "oral.max-single")
    assert "dividing the daily dose into 3 or 4 doses" in di["detail"]


def test_probable_error_detail_names_both_reasons():
    di = by_rule(run(parameters(order(dosage(80, "mg", 3)))), "oral.probable-error")
    assert "80 mg" in di["detail"] and "240 mg/day" in di["detail"]
    assert "entry error" in di["detail"]


def test_ceiling_rules_check_every_step_of_a_plan():
    result = run(parameters(order(dosage(10, "mg", 3, sequence=1),
                                  dosage(30, "mg", 3, sequence=2))))
    assert found(result) == [(MD, "moderate"), (MS, "moderate")]
    assert "step 2 of 2" in by_rule(result, MD)["detail"]
    assert "90 mg/day" in by_rule(result, MD)["detail"]


def test_as_needed_worst_case_counts_for_max_daily():
    # 20 mg as needed up to 6 times a day: worst case 120 mg/day
    result = run(parameters(order(prn(20, 6))))
    assert found(result) == [(MD, "high")]
    assert "120 mg/day" in by_rule(result, MD)["detail"]


def test_as_needed_max_dose_per_period_counts_for_max_daily():
    d = dosage(10, "mg", None, asNeededBoolean=True, maxDosePerPeriod={
        "numerator": {"value": 90, "unit": "mg", "system": "http://unitsofmeasure.org",
                      "code": "mg"},
        "denominator": {"value": 1, "unit": "day", "system": "http://unitsofmeasure.org",
                        "code": "d"}})
    result = run(parameters(order(d)))
    assert found(result) == [(MD, "moderate")]
    assert "Ordered 90 mg/day (10 mg as needed at most 90 mg/day)" in by_rule(result, MD)["detail"]


def test_as_needed_detail_names_frequency_and_maximum():
    # the smaller of dose x maximum frequency (120) and the daily cap (100) is judged
    d = dosage(20, "mg", 6, asNeededBoolean=True, maxDosePerPeriod={
        "numerator": {"value": 100, "unit": "mg"}, "denominator": {"value": 1, "unit": "d"}})
    detail = by_rule(run(parameters(order(d))), MD)["detail"]
    assert ("Ordered 100 mg/day (20 mg as needed up to 6 times a day, at most 100 mg/day)"
            in detail)


# --- duplicate -----------------------------------------------------------------------------

def active(dose: float = 20, id: str = "old", status: str = "active", **extra: Any
           ) -> dict[str, Any]:
    extra.setdefault("authoredOn", "2026-10-01T09:00:00Z")
    return order(dosage(dose, "mg", 3), id=id, status=status, **extra)


DUPLICATE_CASES = [
    pytest.param({"context": [active()]}, True, id="active-context-order-fires"),
    pytest.param({"context": [active(status="on-hold")]}, True, id="on-hold-context-order-fires"),
    pytest.param({"context": [active()], "prior": "MedicationRequest/old"}, False,
                 id="prior-prescription-replaces"),
    pytest.param({"context": [active()], "prior": "https://ehr.example/fhir/MedicationRequest/old"},
                 False, id="prior-prescription-absolute-url-replaces"),
    pytest.param({"context": [active(status="stopped")]}, False, id="stopped-context-no"),
    pytest.param({"context": [active(status="completed")]}, False, id="completed-context-no"),
    pytest.param({"stopped_in_call": True}, False, id="stopped-order-of-same-call-no"),
    pytest.param({"context": [active(dosageInstruction=[{
        **dosage(20, "mg", 3),
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d",
                              "boundsPeriod": {"start": "2026-10-01", "end": "2026-11-20"}}}}])]},
                 False, id="bounds-ended-before-no"),
    pytest.param({"context": [active(dosageInstruction=[{
        **dosage(20, "mg", 3),
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d",
                              "boundsDuration": {"value": 14, "unit": "d", "code": "d"}}}}])]},
                 False, id="bounds-duration-ended-before-no"),
    pytest.param({"context": [active(authoredOn="2026-11-20T09:00:00Z", dosageInstruction=[{
        **dosage(20, "mg", 3),
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d",
                              "boundsDuration": {"value": 14, "unit": "d", "code": "d"}}}}])]},
                 True, id="bounds-duration-still-running-fires"),
    pytest.param({"context": [active(dosageInstruction=[{
        **dosage(20, "mg", 3),
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d",
                              "boundsPeriod": {"start": "2026-10-01", "end": "2026-12-20"}}}}])]},
                 True, id="bounds-still-running-fires"),
    pytest.param({"context": [active(dosageInstruction=[{
        **dosage(20, "mg", 3),
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d",
                              "boundsPeriod": {"start": "2026-12-10"}}}}])],
                  "checked_end": "2026-12-01"}, False, id="other-starts-after-this-ends-no"),
    pytest.param({"context": [active(medicationCodeableConcept={"text": "tizanidine 4 mg"})]},
                 False, id="other-drug-no"),
    pytest.param({"context": [active(dosageInstruction=[{
        **dosage(50, "ug", 1),
        "route": {"coding": [{"system": "http://snomed.info/sct", "code": "72607000"}]}}])]},
                 False, id="intrathecal-order-no"),
]


@pytest.mark.parametrize(("setup", "fires"), DUPLICATE_CASES)
def test_duplicate(client, setup, fires):
    new = order(dosage(10, "mg", 3))
    if "checked_end" in setup:
        new["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"] = {
            "start": "2026-11-25T09:00:00Z", "end": setup["checked_end"]}
    if "prior" in setup:
        new["priorPrescription"] = {"reference": setup["prior"]}
    orders = [new]
    if setup.get("stopped_in_call"):
        orders.append(active(status="stopped"))
    result = http_run(client, parameters(*orders, context=setup.get("context")))
    checked = [di for di in issues(result)
               if di["implicated"][0]["reference"] == "MedicationRequest/ord-1"]
    assert ("oral.duplicate" in [di["identifier"][0]["value"] for di in checked]) is fires


def test_duplicate_detail_and_implicated():
    result = run(parameters(order(dosage(10, "mg", 3)), context=[active(20)]))
    di = by_rule(result, "oral.duplicate")
    assert di["severity"] == "moderate"
    assert di["code"]["coding"][0]["code"] == "DUPTHPY"
    assert di["code"]["coding"][0]["display"] == "Duplicate Therapy Alert"
    assert [r["reference"] for r in di["implicated"]] == [
        "MedicationRequest/ord-1", "MedicationRequest/old"]
    assert "90 mg/day" in di["detail"]  # 30 + 60
    assert "60 mg/day" in di["detail"]
    # every other dose rule judges the checked order on its own (30 mg/day)
    assert found_ids(result) == ["oral.duplicate"]


def test_two_drafts_in_one_call_are_duplicates_of_each_other():
    result = run(parameters(order(dosage(10, "mg", 3)), order(dosage(5, "mg", 3), id="ord-2")))
    dup = [di for di in issues(result) if di["identifier"][0]["value"] == "oral.duplicate"]
    assert sorted(di["implicated"][0]["reference"] for di in dup) == [
        "MedicationRequest/ord-1", "MedicationRequest/ord-2"]


def test_duplicate_through_a_bundle_and_http(client):
    body = bundle(patient(), order(dosage(10, "mg", 3)), active(20))
    result = http_run(client, body)
    assert found_ids(result) == ["oral.duplicate"]
    assert outcome(result) is None


def test_tablet_product_name_strength_end_to_end():
    o = order(dosage(3, "tablet", 3), concept=baclofen_concept("baclofen 10 MG Oral Tablet"))
    result = run(parameters(o))
    assert found(result) == [(MD, "moderate"), (MS, "moderate")]
    detail = by_rule(result, MD)["detail"]
    assert "90 mg/day" in detail and "3 tablets = 30 mg" in detail


@pytest.mark.parametrize(("lines", "rule", "words"), [
    pytest.param([dosage(26.68, "mg", 3)], MD, "Ordered 80.04 mg/day", id="max-daily-80.04"),
    pytest.param([once(20.04)], MS, "One dose of 20.04 mg is above", id="max-single-20.04"),
    pytest.param([dosage(20, "mg", 4), dosage(0.001, "mg", 1)], MD, "Ordered 80.001 mg/day",
                 id="max-daily-80.001"),
])
def test_a_dose_just_above_a_limit_does_not_read_as_the_limit(lines, rule, words):
    assert words in by_rule(run(parameters(order(*lines))), rule)["detail"]


@pytest.mark.parametrize(("quantity", "concept"), [
    pytest.param(dosage(80, "mg", None, timing={"repeat": {"count": 1}}), None, id="80-mg"),
    pytest.param(dosage(0.08, "g", None, timing={"repeat": {"count": 1}}), None, id="0.08-g"),
    pytest.param(dosage(80000, "mcg", None, timing={"repeat": {"count": 1}}), None,
                 id="80000-mcg"),
    pytest.param(dosage(8, "tablet", None, timing={"repeat": {"count": 1}}),
                 baclofen_concept("baclofen 10 MG Oral Tablet"), id="8-tablets-of-10-mg"),
    pytest.param(dosage(16, "mL", None, timing={"repeat": {"count": 1}}),
                 baclofen_concept("baclofen 25 mg/5 mL oral suspension"),
                 id="16-mL-of-5-mg-per-mL"),
    pytest.param(dosage(0.1, "g", None, timing={"repeat": {"count": 1}}), None, id="0.1-g"),
])
def test_probable_error_at_exactly_80_mg_in_every_unit(client, quantity, concept):
    result = http_run(client, parameters(order(quantity, concept=concept)))
    assert ("oral.probable-error", "high") in found(result)


@pytest.mark.parametrize(("quantity", "concept"), [
    pytest.param(dosage(79.99, "mg", None, timing={"repeat": {"count": 1}}), None,
                 id="79.99-mg"),
    pytest.param(dosage(0.07999, "g", None, timing={"repeat": {"count": 1}}), None,
                 id="0.07999-g"),
    pytest.param(dosage(15.99, "mL", None, timing={"repeat": {"count": 1}}),
                 baclofen_concept("baclofen 25 mg/5 mL oral suspension"), id="15.99-mL"),
])
def test_probable_error_just_below_80_mg_in_every_unit(client, quantity, concept):
    result = http_run(client, parameters(order(quantity, concept=concept)))
    assert found(result) == [("oral.max-single", "moderate")]
