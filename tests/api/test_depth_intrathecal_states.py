"""Issue 16, priorities 4 and 5: intrathecal doses read whatever frequency fields or text
units come with them (clinical-rules section 6), and the new patient states: alcohol use
disorder (interaction.alcohol, section 8) and breastfeeding (lactation, section 9). One row
per rule and case through both front doors."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support import builders as b
from tests.support.context_builders import ICD10, LOINC
from tests.support.doors import ago, assert_both, born, both, detail, native

IT_ROUTE = {"coding": [{"system": b.SNOMED, "code": "72607000", "display": "Intrathecal"}]}
IT_CONCEPT = {"coding": [{"system": b.RXNORM, "code": "1292", "display": "baclofen"}],
              "text": "baclofen 2000 MCG/ML Injection"}


def it_order(dose: dict[str, Any]) -> dict[str, Any]:
    return b.order({**dose, "route": IT_ROUTE}, concept=IT_CONCEPT, authoredOn=ago(0, hour=0))


def dose_q(value: float, unit: str, code: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit}
    if code:
        q.update(system=b.UCUM, code=code)
    return q


def rate(value: float, unit: str) -> dict[str, Any]:
    return {"doseAndRate": [{"rateQuantity": dose_q(value, unit)}]}


IT_CASES: list[tuple[str, dict[str, Any], dict[str, str | None]]] = [
    ("intrathecal.bolus_count-1-with-frequency-fields",
     {"doseAndRate": [{"doseQuantity": dose_q(150, "mcg", "ug")}],
      "timing": {"repeat": {"count": 1, "frequency": 1, "period": 1, "periodUnit": "d"}}},
     {"intrathecal.bolus": "high", "intrathecal.max-daily": None}),
    ("intrathecal.bolus_count-1-within-the-screening-maximum",
     {"doseAndRate": [{"doseQuantity": dose_q(100, "mcg", "ug")}],
      "timing": {"repeat": {"count": 1, "frequency": 1, "period": 1, "periodUnit": "d"}}},
     {"intrathecal.bolus": None}),
    ("intrathecal.max-daily_rate-unit-as-text-mcg-hr",
     rate(50, "mcg/hr"), {"intrathecal.max-daily": "moderate",
                          "order.unverifiable-dose": None}),
    ("intrathecal.max-daily_rate-unit-as-text-microgram-hour",
     rate(100, "microgram/hour"), {"intrathecal.max-daily": "high",
                                   "order.unverifiable-dose": None}),
    ("intrathecal.max-daily_dose-unit-as-text-mcg-day",
     {"doseAndRate": [{"doseQuantity": dose_q(1200, "mcg/day")}]},
     {"intrathecal.max-daily": "moderate", "order.unverifiable-dose": None}),
    ("intrathecal.max-daily_rate-text-within-maximum",
     rate(20, "mcg/h"), {"intrathecal.max-daily": None, "order.unverifiable-dose": None}),
]


@pytest.mark.parametrize("case", IT_CASES, ids=[c[0] for c in IT_CASES])
def test_intrathecal_both_front_doors(client: FlaskClient, case: Any) -> None:
    _id, dose, expected = case
    got_native, got_cds = both(client, [it_order(dose)], b.patient(born(40)), [])
    for door, got in (("native", got_native), ("cds", got_cds)):
        for rule, severity in expected.items():
            assert got.get(rule) == severity, (door, rule, got)
        # clinical-rules section 11: an intrathecal order never gets oral, renal or
        # withdrawal findings
        assert not any(r.startswith(("oral.", "renal.", "withdrawal.")) for r in got), got


def test_text_rate_is_read_as_micrograms_per_day(client: FlaskClient) -> None:
    _got, result = native(client, [it_order(rate(50, "mcg/hr"))], b.patient(born(40)), [])
    assert "1200 micrograms a day" in detail(result, "intrathecal.max-daily")


# --- alcohol use disorder and breastfeeding ---------------------------------------------------

def cond(code: str | None, id: str, text: str | None = None, system: str = ICD10,
         clinical: str = "active") -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if code:
        concept["coding"] = [{"system": system, "code": code}]
    if text:
        concept["text"] = text
    return {"resourceType": "Condition", "id": id, "subject": {"reference": "Patient/pat-1"},
            "code": concept,
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": clinical}]}}


def observation(id: str, text: str, value: Any, days: float = 10) -> dict[str, Any]:
    o: dict[str, Any] = {"resourceType": "Observation", "id": id, "status": "final",
                         "subject": {"reference": "Patient/pat-1"},
                         "code": {"coding": [{"system": LOINC, "code": "XXXXX-0"}],
                                  "text": text},
                         "effectiveDateTime": ago(days)}
    if isinstance(value, bool):
        o["valueBoolean"] = value
    else:
        o["valueCodeableConcept"] = {"text": value}
    return o


STATES: list[tuple[str, list[dict[str, Any]], dict[str, str | None]]] = [
    ("interaction.alcohol_icd10-f10-20-dependence", [cond("F10.20", "aud-1")],
     {"interaction.alcohol": "low"}),
    ("interaction.alcohol_icd10-f10-10-abuse", [cond("F10.10", "aud-1")],
     {"interaction.alcohol": "low"}),
    ("interaction.alcohol_icd10-f10-21-in-remission-is-silent", [cond("F10.21", "aud-1")],
     {"interaction.alcohol": None}),
    ("interaction.alcohol_snomed-alcoholism", [cond("7200002", "aud-1", system=b.SNOMED)],
     {"interaction.alcohol": "low"}),
    ("interaction.alcohol_text-only", [cond(None, "aud-1", text="Alcohol use disorder, severe")],
     {"interaction.alcohol": "low"}),
    ("interaction.alcohol_resolved-condition-is-silent",
     [cond("F10.20", "aud-1", clinical="resolved")], {"interaction.alcohol": None}),
    ("lactation_condition-text", [cond(None, "bf-1", text="Breastfeeding")],
     {"lactation": "low"}),
    ("lactation_icd10-z39-1", [cond("Z39.1", "bf-1")], {"lactation": "low"}),
    ("lactation_observation-yes", [observation("bf-o", "Breastfeeding status",
                                               "Currently breastfeeding")],
     {"lactation": "low"}),
    ("lactation_observation-not-breastfeeding-is-silent",
     [observation("bf-o", "Breastfeeding status", "Not breastfeeding")], {"lactation": None}),
    ("lactation_observation-false-is-silent",
     [observation("bf-o", "Breastfeeding", False)], {"lactation": None}),
    ("lactation_observation-older-than-365-days-is-silent",
     [observation("bf-o", "Breastfeeding status", "Currently breastfeeding", days=400)],
     {"lactation": None}),
]


@pytest.mark.parametrize("case", STATES, ids=[c[0] for c in STATES])
def test_states_both_front_doors(client: FlaskClient, case: Any) -> None:
    _id, context, expected = case
    order = b.order(b.dosage(5, "mg", 3), authoredOn=ago(0, hour=0))
    assert_both(client, [order], b.patient(born(30), "female"), context, expected)


def test_lactation_and_alcohol_run_on_intrathecal_orders_and_cite_the_record(
        client: FlaskClient) -> None:
    context = [cond(None, "bf-1", text="Lactating mother"), cond("F10.20", "aud-1")]
    dose = {"doseAndRate": [{"doseQuantity": dose_q(300, "mcg", "ug")}],
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}
    got, result = native(client, [it_order(dose)], b.patient(born(30), "female"), context)
    assert got.get("lactation") == "low" and got.get("interaction.alcohol") == "low"
    lact = b.by_rule(result, "lactation")
    assert lact["code"]["coding"][0]["code"] == "LACT"
    assert lact["code"]["coding"][0]["display"] == "Lactation Alert"
    assert "Condition/bf-1" in lact["detail"]
    assert b.by_rule(result, "interaction.alcohol")["code"]["coding"][0]["code"] == "DRG"
