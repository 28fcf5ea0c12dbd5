"""renal.dose-band, renal.dialysis, renal.unknown, renal.stale and geriatric.renal (with its
merge), end to end: request in, validated DetectedIssues out (clinical-rules section 5)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from fractions import Fraction as F
from pathlib import Path
from typing import Any

import pytest

from service.checker import check_body
from service.knowledge import load
from tests.support.builders import by_rule, dosage, issues, order, parameters, patient
from tests.support.checks import post_check, run
from tests.support.context_builders import (
    condition,
    creatinine,
    dialysis_procedure,
    dispense,
    egfr,
    height,
    history_request,
    weight,
)
from tests.support.fhir_validate import validate

RENAL = {"renal.dose-band", "renal.dialysis", "renal.unknown", "renal.stale",
         "geriatric.renal"}
ADULT = patient("1970-05-01")          # 56
OLDER = patient("1955-05-01")          # 71
CHILD = patient("2020-05-01")          # 6
NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def renal_findings(result: dict[str, Any]) -> dict[str, str]:
    return {di["identifier"][0]["value"]: di["severity"] for di in issues(result)
            if di["identifier"][0]["value"] in RENAL}


def evidence(di: dict[str, Any]) -> list[str]:
    return [d["reference"] for e in di.get("evidence", []) for d in e["detail"]]


def check(dose: float, freq: int, pat: dict[str, Any], context: list[dict[str, Any]],
          profile: str = "us") -> dict[str, Any]:
    # a current regimen at the same dose keeps start/titration rules out of the way
    current = history_request(dose, freq, start="2026-09-01", id="cur")
    return run(parameters(order(dosage(dose, "mg", freq)), pat=pat,
                          context=[current, *context], profile=profile), profile=profile)


@pytest.mark.parametrize(
    "dose,freq,pat,context,expected",
    [
        # mild band, cap 53.3 mg/day (2/3 of 80)
        pytest.param(20, 3, ADULT, [egfr(80)], {"renal.dose-band": "moderate"},
                     id="egfr_exactly_80_mild_60mg_moderate"),
        pytest.param(17.5, 3, ADULT, [egfr(80)], {}, id="egfr_80_52_5mg_under_cap"),
        pytest.param(20, 3, ADULT, [egfr(80.04)], {"renal.dose-band": "moderate"},
                     id="egfr_80_04_rounds_to_mild"),
        pytest.param(20, 3, ADULT, [egfr(80.05)], {}, id="egfr_80_05_rounds_to_normal"),
        pytest.param(20, 3, ADULT, [egfr(81)], {}, id="egfr_81_normal"),
        pytest.param(20, 3, ADULT, [egfr(50)], {"renal.dose-band": "moderate"},
                     id="egfr_exactly_50_mild_60mg"),
        pytest.param(15, 3, ADULT, [egfr(50)], {}, id="egfr_exactly_50_mild_45mg_under_cap"),
        # moderate band, cap 40 mg/day
        pytest.param(15, 3, ADULT, [egfr(49.94)], {"renal.dose-band": "moderate"},
                     id="egfr_49_94_moderate_45mg"),
        pytest.param(10, 4, ADULT, [egfr(49.9)], {}, id="egfr_49_9_exactly_cap_40mg"),
        pytest.param(15, 3, ADULT, [egfr(30)], {"renal.dose-band": "moderate"},
                     id="egfr_exactly_30_moderate"),
        pytest.param(10, 4, ADULT, [egfr(29.95)], {}, id="egfr_29_95_rounds_to_30_cap_40"),
        # severe band, 5 mg/day; high from 20 mg/day
        pytest.param(10, 4, ADULT, [egfr(29.94)], {"renal.dose-band": "high"},
                     id="egfr_29_94_severe_40mg_high"),
        pytest.param(5, 1, ADULT, [egfr(20)], {}, id="severe_exactly_5mg_no_finding"),
        pytest.param(2.5, 3, ADULT, [egfr(20)], {"renal.dose-band": "moderate"},
                     id="severe_7_5mg_moderate"),
        pytest.param(5, 3, ADULT, [egfr(20)], {"renal.dose-band": "moderate"},
                     id="severe_15mg_moderate"),
        pytest.param(5, 4, ADULT, [egfr(20)], {"renal.dose-band": "high"},
                     id="severe_exactly_20mg_high"),
        pytest.param(5, 4, ADULT, [egfr(15)], {"renal.dose-band": "high"},
                     id="egfr_exactly_15_is_severe_not_esrd"),
        # bounded results
        pytest.param(20, 4, ADULT, [egfr(60, comparator=">")], {}, id="gt60_normal"),
        pytest.param(15, 3, ADULT, [egfr(None, string=">45")], {"renal.dose-band": "moderate"},
                     id="gt45_counts_as_45"),
        pytest.param(2.5, 1, ADULT, [egfr(None, string="<15")], {"renal.dialysis": "moderate"},
                     id="lt15_is_dialysis_band"),
        # dialysis / ESRD
        pytest.param(5, 1, ADULT, [condition("N18.6")], {"renal.dialysis": "moderate"},
                     id="dialysis_exactly_5mg_moderate"),
        pytest.param(2.5, 3, ADULT, [condition("Z99.2")], {"renal.dialysis": "high"},
                     id="dialysis_7_5mg_high"),
        pytest.param(5, 1, ADULT, [dialysis_procedure("2026-11-01")],
                     {"renal.dialysis": "moderate"}, id="dialysis_procedure_recent"),
        pytest.param(10, 3, ADULT, [egfr(70), condition("N18.5")], {"renal.dialysis": "high"},
                     id="esrd_condition_wins_over_a_mild_value"),
        pytest.param(5, 1, ADULT, [condition("N18.6", verification="refuted")], {},
                     id="refuted_esrd_no_finding"),
        # unknown
        pytest.param(5, 3, OLDER, [], {"renal.unknown": "low"}, id="older_no_results_unknown"),
        # round 2: a coded CKD stage stands in as the top of its range (N18.3: 59, mild)
        pytest.param(5, 3, ADULT, [condition("N18.3")], {},
                     id="ckd_stage_3_stands_in_as_59_no_finding"),
        pytest.param(5, 3, ADULT, [condition("N18.9")], {"renal.unknown": "low"},
                     id="ckd_without_stage_no_results_unknown"),
        pytest.param(5, 3, ADULT, [], {}, id="adult_no_results_no_ckd_nothing"),
        pytest.param(5, 3, OLDER, [egfr(70, when="2025-10-01")], {"renal.unknown": "low"},
                     id="older_only_too_old_result_unknown"),
        # round 2: no weight -> CKD-EPI 2021 (71, male, 1.0 mg/dL: 80.5, mild)
        pytest.param(5, 3, OLDER, [creatinine(1.0)], {},
                     id="older_creatinine_without_weight_ckd_epi_80_5"),
        # stale
        pytest.param(5, 3, OLDER, [egfr(70, when="2026-08-01")], {"renal.stale": "low"},
                     id="older_stale_70"),
        pytest.param(5, 3, ADULT, [egfr(70, when="2026-08-01")], {}, id="adult_stale_70_none"),
        pytest.param(5, 3, ADULT, [egfr(55, when="2026-08-01")], {"renal.stale": "low"},
                     id="adult_stale_55"),
        pytest.param(5, 3, ADULT, [egfr(55, when="2026-08-27T10:00:00Z")], {},
                     id="adult_exactly_90_days_not_stale"),
        # geriatric.renal and its merge
        pytest.param(5, 3, OLDER, [egfr(55)], {"geriatric.renal": "moderate"},
                     id="older_egfr_55_15mg_moderate"),
        pytest.param(5, 4, OLDER, [egfr(55)], {"geriatric.renal": "high"},
                     id="older_egfr_55_exactly_20mg_high"),
        pytest.param(5, 1, OLDER, [egfr(25)], {"geriatric.renal": "high"},
                     id="older_egfr_25_value_below_30_high"),
        pytest.param(5, 3, OLDER, [egfr(60)], {}, id="older_egfr_exactly_60_none"),
        pytest.param(5, 3, OLDER, [egfr(59.95)], {}, id="older_egfr_59_95_rounds_to_60"),
        pytest.param(20, 3, OLDER, [egfr(55)], {"renal.dose-band": "high"},
                     id="merge_dose_band_moderate_with_geriatric_high"),
        pytest.param(5, 1, OLDER, [egfr(12)], {"renal.dialysis": "high"},
                     id="merge_dialysis_moderate_with_geriatric_high"),
        # children: reported eGFR only, cap scaled from the age cap (40 under 8)
        pytest.param(7.5, 3, CHILD, [egfr(40)], {"renal.dose-band": "moderate"},
                     id="child_egfr_40_cap_20_of_40"),
        pytest.param(5, 4, CHILD, [egfr(40)], {}, id="child_egfr_40_exactly_20mg"),
        # round 2: a child's creatinine without a height gives no value: renal.unknown
        pytest.param(7.5, 3, CHILD, [creatinine(2.0), weight(20, when="2026-11-20")],
                     {"renal.unknown": "low"}, id="child_creatinine_without_height_unknown"),
    ],
)
def test_renal_rules(dose, freq, pat, context, expected):
    assert renal_findings(check(dose, freq, pat, context)) == expected


def test_uk_profile_scales_its_own_maximum():
    # uk maximum 100: moderate band cap 50
    assert renal_findings(check(12.5, 4, ADULT, [egfr(40)], "uk")) == {}
    assert renal_findings(check(17.5, 3, ADULT, [egfr(40)], "uk")) == {
        "renal.dose-band": "moderate"}


def test_dose_band_detail_shows_the_arithmetic_and_evidence():
    cr = creatinine(1.5, id="cr-1")
    w = weight(70, id="w-1")
    result = check(15, 3, OLDER, [cr, w])
    di = by_rule(result, "renal.dose-band")
    # (140 - 71) x 70 / (72 x 1.5) = 44.7 mL/min; merged with geriatric.renal (45 >= 20: high)
    assert di["severity"] == "high"
    assert di["detail"].startswith(
        "CrCl 44.7 mL/min on 2026-11-20 (Cockcroft-Gault, actual weight 70 kg, creatinine "
        "1.5 mg/dL, age 71, male; at 65 or older a low creatinine can overestimate clearance) "
        "is in the moderate band: cap 40 mg/day (half of 80 mg/day, the US labels maximum). "
        "Ordered 45 mg/day (15 mg three times a day).")
    assert "Also (geriatric.renal)" in di["detail"]
    assert evidence(di) == ["Observation/cr-1", "Observation/w-1"]
    assert di["code"]["coding"][0]["code"] == "DOSECOND"
    assert "geriatric.renal" not in renal_findings(result)


def test_mild_cap_is_not_rounded():
    di = by_rule(check(20, 3, ADULT, [egfr(70, id="e-1")]), "renal.dose-band")
    assert "cap 53.3 mg/day (two thirds of 80 mg/day" in di["detail"]
    assert "eGFR 70 mL/min/1.73 m2 on 2026-11-20 (reported eGFR, used as a stand-in" \
        in di["detail"]
    assert evidence(di) == ["Observation/e-1"]


@pytest.mark.parametrize(
    "dose,freq,context,label,dose_mg,per_day",
    [
        pytest.param(20, 3, [egfr(40)], "10 mg four times a day (40 mg/day)", F(10), F(4),
                     id="moderate_cap_40_suggest_10_x4"),
        pytest.param(20, 3, [egfr(70)], "17.5 mg three times a day (52.5 mg/day)", F(35, 2),
                     F(3), id="mild_cap_53_3_rounded_down_to_2_5"),
        pytest.param(5, 3, [egfr(20)], "5 mg once a day (5 mg/day)", F(5), F(1),
                     id="severe_cap_5"),
        pytest.param(5, 3, [condition("N18.6")], "5 mg once a day (5 mg/day)", F(5), F(1),
                     id="dialysis_cap_5"),
    ],
)
def test_suggested_corrections(dose, freq, context, label, dose_mg, per_day):
    body = parameters(order(dosage(dose, "mg", freq)), pat=ADULT,
                      context=[history_request(dose, freq, start="2026-09-01"), *context])
    result, _req, outcome = check_body(body, NOW, "us", load())
    validate(result)
    (finding,) = [f for f in outcome.findings if f.rule_id.startswith("renal.")]
    assert finding.correction is not None
    assert finding.correction.label == label
    assert (finding.correction.dose_mg, finding.correction.per_day) == (dose_mg, per_day)
    assert f"for example {label}" in finding.detail


def test_dialysis_detail_and_evidence():
    cond = condition("N18.6", id="esrd-1", text="End stage renal disease")
    di = by_rule(check(10, 3, ADULT, [cond]), "renal.dialysis")
    assert di["severity"] == "high"
    assert "End stage renal disease (N18.6; Condition/esrd-1)" in di["detail"]
    assert "Ordered 30 mg/day (10 mg three times a day)." in di["detail"]
    assert evidence(di) == ["Condition/esrd-1"]


def test_unknown_detail_names_why_and_cites_ckd():
    cond = condition("N18.9", id="ckd-1", text="Chronic kidney disease, unspecified")
    di = by_rule(check(5, 3, OLDER, [cond, egfr(70, when="2025-10-01", id="old-e")]),
                 "renal.unknown")
    assert "age 71" in di["detail"]
    assert "chronic kidney disease recorded" in di["detail"]
    assert "Observation/old-e not used: the result of 2025-10-01 is older than 365 days" \
        in di["detail"]
    assert evidence(di) == ["Condition/ckd-1"]


def test_stale_detail():
    di = by_rule(check(5, 3, OLDER, [egfr(70, when="2026-08-01", id="s-1")]), "renal.stale")
    assert "116 days old (older than 90 days)" in di["detail"]
    assert evidence(di) == ["Observation/s-1"]


def test_intrathecal_order_gets_no_renal_finding():
    it = order(dosage(500, "ug", 1, route={"coding": [{"system": "http://snomed.info/sct",
                                                        "code": "72607000"}]}))
    result = run(parameters(it, pat=OLDER, context=[egfr(20), condition("N18.6")]))
    assert renal_findings(result) == {}


def test_through_http(client):
    body = parameters(order(dosage(20, "mg", 3)), pat=OLDER,
                      context=[egfr(None, string="<15", id="e-http")])
    resp = post_check(client, body)
    assert resp.status_code == 200
    result = resp.get_json()
    validate(result)
    di = by_rule(result, "renal.dialysis")
    assert di["severity"] == "high"
    assert "eGFR <15 mL/min/1.73 m2 on 2026-11-20" in di["detail"]
    assert "counted as just under 15" in di["detail"]
    assert evidence(di) == ["Observation/e-http"]
    assert di["implicated"][0]["reference"] == "MedicationRequest/ord-1"


# --- realistic fixtures through HTTP --------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.mark.parametrize(
    "name,expected,evidence_of",
    [
        pytest.param("patient-context-older-cockcroft-gault.json",
                     {"renal.dose-band": "high"},
                     {"renal.dose-band": ["Observation/cr-1", "Observation/wt-1"]},
                     id="older_cg_44_7_moderate_band_merged_geriatric_high"),
        pytest.param("patient-context-dialysis-bundle.json",
                     {"renal.dialysis": "high", "oral.start-dose": "moderate"},
                     {"renal.dialysis": ["Observation/e-1", "Condition/c-esrd",
                                         "Procedure/p-hd"]},
                     id="dialysis_bundle_30mg_high"),
        pytest.param("patient-context-titration-dispense.json",
                     {"oral.titration-interval": "moderate", "oral.titration-step": "low"},
                     {"oral.titration-interval": ["MedicationDispense/md-1"]},
                     id="dispense_2_days_ago_raise_30_to_60"),
        # round 2: the recorded stage 3b stands in as 44 mL/min (moderate band, cap 40;
        # 15 mg/day is under it), so nothing fires
        pytest.param("patient-context-ckd-unknown.json", {}, {},
                     id="ckd_stage_3b_only_stands_in_as_44"),
    ],
)
def test_patient_context_fixtures(client, name, expected, evidence_of):
    body = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    resp = post_check(client, body)
    assert resp.status_code == 200
    result = resp.get_json()
    validate(result)
    found = {di["identifier"][0]["value"]: di["severity"] for di in issues(result)
             if di["identifier"][0]["value"] in RENAL | {
                 "oral.start-dose", "oral.titration-interval", "oral.titration-step"}}
    assert found == expected
    for rule, refs in evidence_of.items():
        assert evidence(by_rule(result, rule)) == refs


@pytest.mark.parametrize(
    "context",
    [
        pytest.param([creatinine(1e-300), weight(70)], id="creatinine_tiny_clearance_huge"),
        pytest.param([creatinine(1e300), weight(1e300)], id="huge_numbers"),
        pytest.param([creatinine(0), weight(0)], id="zeros"),
        pytest.param([creatinine(-1), weight(-70), height(-5)], id="negatives"),
        pytest.param([creatinine(1.0), weight(200), height(0.01)], id="absurd_height"),
        pytest.param([egfr(None, string=">abc"), egfr(None, string="<"), egfr("12x")],
                     id="unreadable_values"),
        pytest.param([{**egfr(40), "status": ["final"]}, {**condition(), "clinicalStatus": 3}],
                     id="wrong_shapes"),
        pytest.param([dispense(days_supply=-3, quantity=0), history_request(dose=0)],
                     id="odd_history"),
    ],
)
def test_odd_context_values_never_fail(client, context):
    body = parameters(order(dosage(10, "mg", 3)), pat=OLDER, context=context)
    resp = post_check(client, body)
    assert resp.status_code == 200
    validate(resp.get_json())
