"""Issue 16, priority 2: kidney function from more inputs (clinical-rules sections 2 and 5):
CKD-EPI 2021 for adults without a weight, bedside Schwartz for children with a height, coded
CKD stages, ongoing dialysis, a kidney transplant superseding older ESRD evidence; and
pediatric.weight-unknown (section 4). Reference values for both equations, then one row per
rule and case through both front doors."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction as F
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.clinical.renal import RenalInputError, bedside_schwartz, ckd_epi_2021, round_renal
from service.knowledge import load
from tests.support import builders as b
from tests.support.context_builders import ICD10, obs
from tests.support.doors import ago, assert_both, born, detail, native

KB = load()
RENAL = KB.typed.patient_context.renal

# --- reference values ------------------------------------------------------------------------
# CKD-EPI 2021 (S45; the equation as the NIDDK adult GFR page and the QxMD CKD-EPI 2021
# calculator print it: 142 x min(SCr/k,1)^a x max(SCr/k,1)^-1.200 x 0.9938^age [x 1.012 F]),
# worked by hand to 0.1 mL/min/1.73 m2 for these inputs.
CKD_EPI = [
    ("female-50y-scr-1.0", 50, "1.0", True, "68.6"),
    ("male-50y-scr-1.0", 50, "1.0", False, "91.7"),
    ("male-60y-scr-1.2", 60, "1.2", False, "69.2"),
    ("female-80y-scr-2.0", 80, "2.0", True, "24.8"),
    ("female-40y-scr-0.6-below-kappa", 40, "0.6", True, "116.3"),
    ("male-70y-scr-1.5", 70, "1.5", False, "49.8"),
    ("male-30y-scr-0.7-below-kappa", 30, "0.7", False, "127.1"),
]


@pytest.mark.parametrize("case", CKD_EPI, ids=[c[0] for c in CKD_EPI])
def test_ckd_epi_2021_reference_values(case: Any) -> None:
    _id, age, scr, female, expected = case
    assert round_renal(ckd_epi_2021(F(age), F(scr), female, RENAL.ckd_epi_2021),
                       RENAL.round_to) == F(expected)


# Bedside Schwartz (S46): eGFR = 0.413 x height (cm) / SCr (mg/dL).
SCHWARTZ = [
    ("120cm-scr-0.5", 6, 120, "0.5", "99.1"),
    ("140cm-scr-0.7", 10, 140, "0.7", "82.6"),
    ("100cm-scr-1.2", 4, 100, "1.2", "34.4"),
    ("165cm-scr-1.1-rounds-half-up", 15, 165, "1.1", "62"),
]


@pytest.mark.parametrize("case", SCHWARTZ, ids=[c[0] for c in SCHWARTZ])
def test_bedside_schwartz_reference_values(case: Any) -> None:
    _id, age, height, scr, expected = case
    assert round_renal(bedside_schwartz(F(age), F(height), F(scr), RENAL.bedside_schwartz),
                       RENAL.round_to) == F(expected)


@pytest.mark.parametrize("age", [F(1, 2), F(18), F(40)])
def test_bedside_schwartz_only_from_1_to_below_18(age: F) -> None:
    with pytest.raises(RenalInputError):
        bedside_schwartz(age, F(100), F(1), RENAL.bedside_schwartz)


def test_ckd_epi_2021_not_below_18() -> None:
    with pytest.raises(RenalInputError):
        ckd_epi_2021(F(17), F(1), True, RENAL.ckd_epi_2021)


# --- scenarios -------------------------------------------------------------------------------

def lab(code: str, value: float, unit: str, days: float = 3, id: str | None = None
        ) -> dict[str, Any]:
    return obs(code, value, unit, ago(days), id=id or f"obs-{code}-{value}")


def creat(value: float, **kw: Any) -> dict[str, Any]:
    return lab("2160-0", value, "mg/dL", **kw)


def egfr(value: float, **kw: Any) -> dict[str, Any]:
    return lab("62238-1", value, "mL/min/{1.73_m2}", **kw)


def height(cm: float, **kw: Any) -> dict[str, Any]:
    return lab("8302-2", cm, "cm", **kw)


def weight(kg: float, **kw: Any) -> dict[str, Any]:
    return lab("29463-7", kg, "kg", **kw)


def cond(code: str, id: str, text: str | None = None, onset_days: float | None = None,
         system: str = ICD10) -> dict[str, Any]:
    c: dict[str, Any] = {
        "resourceType": "Condition", "id": id, "subject": {"reference": "Patient/pat-1"},
        "code": {"coding": [{"system": system, "code": code}], **({"text": text} if text else {})},
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]}}
    if onset_days is not None:
        c["onsetDateTime"] = ago(onset_days)
    return c


def dialysis(id: str = "hd-1", **extra: Any) -> dict[str, Any]:
    p = {"resourceType": "Procedure", "id": id, "status": "completed",
         "subject": {"reference": "Patient/pat-1"},
         "code": {"coding": [{"system": b.SNOMED, "code": "302497006",
                              "display": "Hemodialysis"}]}}
    p.update(extra)
    return p


def draft(dose: float, freq: int) -> dict[str, Any]:
    return b.order(b.dosage(dose, "mg", freq), authoredOn=ago(0, hour=0))


Scenario = tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]


def _s(order: dict[str, Any], years: float, gender: str, context: list[dict[str, Any]]
       ) -> Callable[[], Scenario]:
    return lambda: ([order], b.patient(born(years), gender), context)


CASES: list[tuple[str, Callable[[], Scenario], dict[str, str | None]]] = [
    # CKD-EPI 2021: 50-year-old woman, creatinine 2.0 mg/dL, no weight -> 29.9 (severe band)
    ("renal.dose-band_ckd-epi-2021-adult-without-weight",
     _s(draft(10, 3), 50, "female", [creat(2.0)]),
     {"renal.dose-band": "high", "renal.unknown": None}),
    ("renal.dose-band_ckd-epi-2021-unknown-sex-takes-the-lower",
     _s(draft(10, 3), 50, "unknown", [creat(1.2)]),
     {"renal.dose-band": None, "renal.unknown": None}),
    ("geriatric.renal_ckd-epi-2021-older-adult",
     _s(draft(5, 3), 80, "female", [creat(1.5)]),
     {"geriatric.renal": "moderate"}),
    # bedside Schwartz: 10 years, 140 cm, 1.4 mg/dL -> 41.3 (moderate): cap 30 (half of 60)
    ("renal.dose-band_bedside-schwartz-child-with-height",
     _s(draft(10, 4), 10, "male", [creat(1.4), height(140), weight(35)]),
     {"renal.dose-band": "moderate", "renal.unknown": None,
      "pediatric.weight-unknown": None}),
    ("renal.unknown_child-creatinine-without-height",
     _s(draft(5, 3), 10, "male", [creat(1.4), weight(35)]),
     {"renal.unknown": "low", "renal.dose-band": None}),
    ("renal.unknown_infant-creatinine-gives-no-estimate",
     _s(draft(1, 3), 0.3, "female", [creat(0.4), height(60), weight(6)]),
     {"renal.unknown": "low"}),
    # coded CKD stages stand in for a missing value
    ("renal.dose-band_ckd-stage-4-on-the-problem-list",
     _s(draft(10, 3), 50, "male", [cond("N18.4", "ckd-4")]),
     {"renal.dose-band": "high", "renal.unknown": None}),
    ("renal.dose-band_ckd-stage-3b-snomed",
     _s(draft(15, 3), 50, "male", [cond("700379002", "ckd-3b", system=b.SNOMED)]),
     {"renal.dose-band": "moderate"}),
    ("renal.unknown_ckd-unspecified-without-results",
     _s(draft(5, 3), 50, "male", [cond("N18.9", "ckd-9")]),
     {"renal.unknown": "low"}),
    ("renal.dose-band_result-wins-over-the-coded-stage",
     _s(draft(15, 3), 50, "male", [cond("N18.4", "ckd-4"), egfr(85)]),
     {"renal.dose-band": None}),
    # ongoing dialysis procedures
    ("renal.dialysis_in-progress-procedure-started-long-ago",
     _s(draft(5, 1), 50, "male", [dialysis(status="in-progress",
                                           performedPeriod={"start": ago(400)})]),
     {"renal.dialysis": "moderate"}),
    ("renal.dialysis_performed-period-without-end",
     _s(draft(10, 3), 50, "male", [dialysis(status="completed",
                                            performedPeriod={"start": ago(200)})]),
     {"renal.dialysis": "high"}),
    # a kidney transplant supersedes older ESRD evidence
    ("renal.dialysis_old-esrd-code-after-transplant-does-not-count",
     _s(draft(10, 3), 50, "male", [cond("N18.6", "esrd-1", onset_days=900),
                                   cond("Z94.0", "tx-1", onset_days=500), egfr(75)]),
     {"renal.dialysis": None, "renal.dose-band": None}),
    ("renal.dose-band_after-transplant-mentions-it",
     _s(draft(20, 3), 50, "male", [cond("N18.6", "esrd-1", onset_days=900),
                                   cond("Z94.0", "tx-1", onset_days=500), egfr(75)]),
     {"renal.dialysis": None, "renal.dose-band": "moderate"}),
    ("renal.dialysis_dialysis-after-the-transplant-counts",
     _s(draft(5, 1), 50, "male", [cond("Z94.0", "tx-1", onset_days=500),
                                  dialysis(performedDateTime=ago(10)), egfr(40)]),
     {"renal.dialysis": "moderate"}),
    ("renal.dialysis_value-below-15-still-counts-after-transplant",
     _s(draft(5, 1), 50, "male", [cond("Z94.0", "tx-1", onset_days=500), egfr(12)]),
     {"renal.dialysis": "moderate"}),
    # pediatric.weight-unknown
    ("pediatric.weight-unknown_child-without-weight",
     _s(draft(5, 3), 8, "female", []),
     {"pediatric.weight-unknown": "low", "pediatric.weight-cap": None}),
    ("pediatric.weight-unknown_child-weight-older-than-30-days",
     _s(draft(5, 3), 8, "female", [weight(25, days=45)]),
     {"pediatric.weight-unknown": "low"}),
    ("pediatric.weight-unknown_child-with-weight-is-silent",
     _s(draft(5, 3), 8, "female", [weight(25)]),
     {"pediatric.weight-unknown": None}),
    ("pediatric.weight-unknown_adult-never",
     _s(draft(5, 3), 40, "female", []),
     {"pediatric.weight-unknown": None}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_both_front_doors(client: FlaskClient, case: Any) -> None:
    _id, build, expected = case
    orders, pat, context = build()
    assert_both(client, orders, pat, context, expected)


def _evidence(di: dict[str, Any]) -> list[str]:
    return [d["reference"] for ev in di.get("evidence", []) for d in ev.get("detail", [])]


def test_ckd_epi_detail_names_equation_inputs_and_date(client: FlaskClient) -> None:
    cr = creat(2.0, id="cr-9")
    _got, result = native(client, [draft(10, 3)], b.patient(born(50), "female"), [cr])
    text = detail(result, "renal.dose-band")
    assert "eGFR 29.9 mL/min/1.73 m2 on " + ago(3)[:10] in text
    assert "CKD-EPI 2021" in text and "estimated here" in text
    assert "creatinine 2 mg/dL" in text and "age 50" in text and "female" in text
    assert _evidence(b.by_rule(result, "renal.dose-band")) == ["Observation/cr-9"]


def test_schwartz_detail_and_evidence_cite_creatinine_and_height(client: FlaskClient) -> None:
    context = [creat(1.4, id="cr-1"), height(140, id="ht-1"), weight(35, id="wt-1")]
    _got, result = native(client, [draft(10, 4)], b.patient(born(10)), context)
    text = detail(result, "renal.dose-band")
    assert "eGFR 41.3 mL/min/1.73 m2" in text and "bedside Schwartz" in text
    assert "0.413 x height 140 cm" in text
    assert _evidence(b.by_rule(result, "renal.dose-band")) == ["Observation/cr-1",
                                                                "Observation/ht-1"]


def test_ckd_stage_detail_says_problem_list_and_asks_for_creatinine(client: FlaskClient) -> None:
    _got, result = native(client, [draft(10, 3)], b.patient(born(50)), [cond("N18.4", "ckd-4")])
    text = detail(result, "renal.dose-band")
    assert "problem list, not a result" in text and "current creatinine" in text
    assert "counted as 29 mL/min" in text
    assert _evidence(b.by_rule(result, "renal.dose-band")) == ["Condition/ckd-4"]


def test_transplant_is_mentioned_and_cited(client: FlaskClient) -> None:
    context = [cond("N18.6", "esrd-1", onset_days=900), cond("Z94.0", "tx-1", onset_days=500),
               egfr(75, id="e-1")]
    _got, result = native(client, [draft(20, 3)], b.patient(born(50)), context)
    di = b.by_rule(result, "renal.dose-band")
    assert "kidney transplant" in di["detail"] and "no longer count" in di["detail"]
    assert set(_evidence(di)) == {"Observation/e-1", "Condition/tx-1", "Condition/esrd-1"}


def test_renal_unknown_names_the_unusable_creatinine(client: FlaskClient) -> None:
    _got, result = native(client, [draft(5, 3)], b.patient(born(10)), [creat(1.4, id="cr-7")])
    di = b.by_rule(result, "renal.unknown")
    assert "no kidney function could be estimated from the creatinine" in di["detail"]
    assert "no height within 30 days" in di["detail"]
    assert "Observation/cr-7" in _evidence(di)
