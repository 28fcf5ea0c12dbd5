"""oral.start-dose, oral.titration-interval, oral.titration-step (clinical-rules section 3):
boundaries at 15 and 30 mg/day, 0.3 and 0.6 mg/kg/day, 3 and 7 days, +15 and +30 mg/day."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.builders import bundle, by_rule, dosage, issues, order, parameters, patient
from tests.support.checks import post_check, run
from tests.support.context_builders import dispense, egfr, history_request, weight
from tests.support.fhir_validate import validate

TITRATION = {"oral.start-dose", "oral.titration-interval", "oral.titration-step"}


def severities(result: dict[str, Any], rules: set[str] = TITRATION) -> dict[str, str]:
    out = {}
    for di in issues(result):
        rule = di["identifier"][0]["value"]
        if rule in rules:
            out[rule] = di["severity"]
    return out


ADULT = patient("1970-05-01")          # 56
OLDER = patient("1955-05-01")          # 71
CHILD = patient("2018-05-01")          # 8 (us: a child)
PRN = {"asNeededBoolean": True}


# --- oral.start-dose ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "dose,freq,pat,context,extra,expected",
    [
        pytest.param(5, 3, ADULT, [], {}, None, id="start_exactly_15_no_finding"),
        pytest.param(7.5, 2, ADULT, [], {}, None, id="start_15_in_two_doses_no_finding"),
        pytest.param(10, 2, ADULT, [], {}, "low", id="start_20_low"),
        pytest.param(10, 3, ADULT, [], {}, "low", id="start_exactly_30_low"),
        pytest.param(10, 4, ADULT, [], {}, "moderate", id="start_40_moderate"),
        pytest.param(10, 2, OLDER, [], {}, "moderate", id="start_20_age_71_moderate"),
        pytest.param(10, 2, ADULT, [egfr(45)], {}, "moderate", id="start_20_egfr_45_moderate"),
        pytest.param(10, 2, ADULT, [egfr(50)], {}, "low", id="start_20_egfr_exactly_50_low"),
        pytest.param(10, 2, ADULT, [egfr(49.96)], {}, "low", id="start_20_egfr_49_96_rounds_50"),
        pytest.param(10, 4, ADULT, [], PRN, "moderate", id="start_prn_worst_case_40_moderate"),
        pytest.param(5, 3, CHILD, [weight(25, when="2026-11-20")], {}, "low",
                     id="child_15_mg_for_25_kg_0_6_low"),
        pytest.param(2.5, 3, CHILD, [weight(25, when="2026-11-20")], {}, None,
                     id="child_7_5_mg_for_25_kg_exactly_0_3_no_finding"),
        pytest.param(5, 2, CHILD, [weight(25, when="2026-11-20")], {}, "low",
                     id="child_0_4_mg_kg_low"),
        pytest.param(10, 2, CHILD, [weight(25, when="2026-11-20")], {}, "moderate",
                     id="child_0_8_mg_kg_moderate"),
        pytest.param(10, 2, CHILD, [], {}, "low", id="child_without_weight_adult_rule_low"),
    ],
)
def test_start_dose(dose, freq, pat, context, extra, expected):
    result = run(parameters(order(dosage(dose, "mg", freq, **extra)), pat=pat, context=context))
    assert severities(result).get("oral.start-dose") == expected
    assert "oral.titration-interval" not in severities(result)


def test_start_dose_detail_and_child_weight_evidence():
    w = weight(25, when="2026-11-20", id="w-1")
    result = run(parameters(order(dosage(10, "mg", 2)), pat=CHILD, context=[w]))
    di = by_rule(result, "oral.start-dose")
    assert "20 mg/day = 0.8 mg/kg/day for 25 kg" in di["detail"]
    assert "0.3 mg/kg/day (7.5 mg/day)" in di["detail"]
    assert di["code"]["coding"][0]["code"] == "DOSE"
    refs = [d["reference"] for e in di["evidence"] for d in e["detail"]]
    assert "Observation/w-1" in refs


def test_start_dose_adult_detail():
    result = run(parameters(order(dosage(10, "mg", 4)), pat=ADULT))
    di = by_rule(result, "oral.start-dose")
    assert di["severity"] == "moderate"
    assert "new therapy starting at 40 mg/day, above the usual start of 15 mg/day" in di["detail"]
    assert "more than 30 mg/day" in di["detail"]


# --- oral.titration-interval --------------------------------------------------------------
# The checked order starts at its authoredOn, 2026-11-25T09:00Z; it raises 30 -> 45 mg/day
# (+15, no step finding).

@pytest.mark.parametrize(
    "since,pat,context,expected",
    [
        pytest.param("2026-11-22T09:00:00Z", ADULT, [], None, id="exactly_3_days_no_finding"),
        pytest.param("2026-11-22T09:00:01Z", ADULT, [], "moderate",
                     id="a_second_under_3_days_moderate"),
        pytest.param("2026-11-24T09:00:00Z", ADULT, [], "moderate", id="1_day_moderate"),
        pytest.param("2026-11-22T09:00:00Z", OLDER, [], "low", id="older_exactly_3_days_low"),
        pytest.param("2026-11-18T09:00:01Z", OLDER, [], "low", id="older_under_7_days_low"),
        pytest.param("2026-11-18T09:00:00Z", OLDER, [], None, id="older_exactly_7_days_none"),
        pytest.param("2026-11-20T09:00:00Z", ADULT, [egfr(40)], "low", id="renal_40_5_days_low"),
        pytest.param("2026-11-20T09:00:00Z", ADULT, [egfr(55)], None, id="renal_55_5_days_none"),
        pytest.param("2026-11-20T09:00:00Z", CHILD, [], "low", id="child_5_days_low"),
        pytest.param("2026-11-23T09:00:00Z", OLDER, [], "moderate",
                     id="older_2_days_moderate"),
    ],
)
def test_titration_interval(since, pat, context, expected):
    current = history_request(10, 3, start=since)
    result = run(parameters(order(dosage(15, "mg", 3)), pat=pat, context=[current, *context]))
    found = severities(result)
    assert found.get("oral.titration-interval") == expected
    assert "oral.start-dose" not in found
    assert "oral.titration-step" not in found


def test_titration_interval_detail_and_evidence():
    current = history_request(10, 3, start="2026-11-24T09:00:00Z", id="cur")
    result = run(parameters(order(dosage(15, "mg", 3)), pat=ADULT, context=[current]))
    di = by_rule(result, "oral.titration-interval")
    assert di["detail"] == (
        "The daily dose rises from 30 mg/day to 45 mg/day over the current regimen "
        "(MedicationRequest/cur: 30 mg/day since 2026-11-24), 1 days after the previous dose "
        "started; increases should be at least 3 days apart.")
    refs = [d["reference"] for e in di["evidence"] for d in e["detail"]]
    assert refs == ["MedicationRequest/cur"]


# --- oral.titration-step ------------------------------------------------------------------

@pytest.mark.parametrize(
    "old,new,expected",
    [
        pytest.param((10, 3), (15, 3), None, id="plus_15_exactly_no_finding"),
        pytest.param((10, 3), (12.5, 4), "low", id="plus_20_low"),
        pytest.param((5, 3), (15, 3), "low", id="plus_exactly_30_low"),
        pytest.param((5, 3), (12.5, 4), "moderate", id="plus_35_moderate"),
        pytest.param((20, 3), (10, 3), None, id="decrease_no_finding"),
        pytest.param((10, 3), (10, 3), None, id="same_dose_no_finding"),
    ],
)
def test_titration_step(old, new, expected):
    current = history_request(old[0], old[1], start="2026-10-01")
    result = run(parameters(order(dosage(new[0], "mg", new[1])), pat=ADULT, context=[current]))
    found = severities(result)
    assert found.get("oral.titration-step") == expected
    assert "oral.titration-interval" not in found and "oral.start-dose" not in found


def test_restart_within_14_days_is_titrated_not_started():
    stopped = history_request(10, 3, start="2026-10-01", end="2026-11-15", status="completed")
    result = run(parameters(order(dosage(20, "mg", 3)), pat=ADULT, context=[stopped]))
    found = severities(result)
    assert found == {"oral.titration-step": "low"}  # 30 -> 60 mg/day: +30


def test_stopped_order_of_the_same_call_is_the_current_regimen():
    old = history_request(10, 3, id="old", start="2026-10-01", status="stopped")
    new = order(dosage(12.5, "mg", 4), priorPrescription={"reference": "MedicationRequest/old"})
    result = run(parameters(new, old, pat=ADULT))
    assert severities(result) == {"oral.titration-step": "low"}  # 30 -> 50 mg/day


def test_dispenses_only_history():
    result = run(parameters(order(dosage(20, "mg", 3)), pat=ADULT,
                            context=[dispense(5, 3, handed="2026-11-24T09:00:00Z")]))
    assert severities(result) == {"oral.titration-interval": "moderate",
                                  "oral.titration-step": "moderate"}


# --- plans inside one order ------------------------------------------------------------------

def _step(dose: float, seq: int, days: int | None) -> dict[str, Any]:
    d = dosage(dose, "mg", 3, sequence=seq)
    if days:
        d["timing"]["repeat"]["boundsDuration"] = {"value": days, "unit": "d", "code": "d",
                                                   "system": "http://unitsofmeasure.org"}
    return d


def test_plan_steps_are_titrated_with_the_step_duration():
    plan = order(_step(5, 1, 3), _step(10, 2, 3), _step(20, 3, None))
    adult = severities(run(parameters(plan, pat=ADULT)))
    assert adult == {"oral.titration-step": "low"}  # 30 -> 60 after 3 days: +30
    older = severities(run(parameters(plan, pat=OLDER)))
    assert older == {"oral.titration-step": "low", "oral.titration-interval": "low"}


def test_plan_with_short_steps():
    plan = order(_step(5, 1, 2), _step(7.5, 2, None))
    assert severities(run(parameters(plan, pat=ADULT))) == {"oral.titration-interval": "moderate"}


def test_plan_steps_without_bounds_are_limits_only():
    plan = order(_step(5, 1, None), _step(20, 2, None))
    assert severities(run(parameters(plan, pat=ADULT))) == {}


# --- modes and stops ----------------------------------------------------------------------

def test_review_mode_gets_no_start_or_titration_rules():
    active = order(dosage(10, "mg", 4), status="active")
    result = run(bundle(ADULT, active))
    assert severities(result) == {}


def test_through_http_with_validation(client):
    current = history_request(10, 3, start="2026-11-24T09:00:00Z", id="cur")
    resp = post_check(client, parameters(order(dosage(20, "mg", 4)), pat=ADULT,
                                         context=[current]))
    assert resp.status_code == 200
    result = resp.get_json()
    validate(result)
    assert severities(result) == {"oral.titration-interval": "moderate",
                                  "oral.titration-step": "moderate"}
    step = by_rule(result, "oral.titration-step")
    assert "from 30 mg/day to 80 mg/day" in step["detail"]
    assert "increase of 50 mg/day" in step["detail"]


def test_same_dose_refill_does_not_restart_the_titration_clock():
    long_ago = history_request(10, 3, id="orig", start="2026-09-01")
    refill = dispense(10, 3, id="refill", handed="2026-11-24T09:00:00Z")
    result = run(parameters(order(dosage(15, "mg", 3)), pat=ADULT, context=[long_ago, refill]))
    assert severities(result) == {}
    # a dispense at a different dose two days ago is a dose change: the clock restarts
    changed = dispense(5, 3, id="lower", handed="2026-11-23T09:00:00Z")
    result = run(parameters(order(dosage(7.5, "mg", 3)), pat=ADULT,
                            context=[long_ago, changed]))
    assert severities(result) == {"oral.titration-interval": "moderate"}


def test_same_dose_renewal_after_a_gap_of_14_days_restarts():
    first = history_request(10, 3, id="a", start="2026-09-01", end="2026-11-01T00:00:00Z",
                            status="completed")
    renewal = history_request(10, 3, id="b", start="2026-11-15T09:00:00Z")
    result = run(parameters(order(dosage(15, "mg", 3)), pat=ADULT, context=[first, renewal]))
    assert severities(result) == {}  # 10 days on the renewal: > 3 days
    renewal2 = history_request(10, 3, id="c", start="2026-11-24T09:00:00Z")
    result = run(parameters(order(dosage(15, "mg", 3)), pat=ADULT, context=[first, renewal2]))
    assert severities(result) == {"oral.titration-interval": "moderate"}
