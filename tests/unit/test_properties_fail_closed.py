"""Section 11 invariants of round 2, by property-based testing.

- Fail closed: removing an input a rule needs for this patient and order (the dose, a child's
  weight, the renal value of a patient for whom renal.unknown's conditions hold, the current
  regimen's dose) never removes a finding without adding one of the findings that say a check
  could not run.
- A brand-named or ATC-coded order gives the same findings as the generic-named one, and so
  does an interacting medicine recorded by brand or ATC code.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.checker import check_body
from service.knowledge import load
from tests.support.builders import UCUM, baclofen_concept, issues, order, parameters, patient
from tests.support.context_builders import ICD10, obs
from tests.support.fhir_validate import validate

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
PROPS = settings(max_examples=50, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
CANNOT_RUN = frozenset({"order.unverifiable-dose", "order.prn-no-max", "units.liquid-volume",
                        "renal.unknown", "pediatric.weight-unknown", "oral.titration-unknown",
                        "context.unavailable"})
ATC = "http://www.whocc.no/atc"


def findings(body: dict[str, Any]) -> dict[str, str]:
    result = check_body(body, NOW, "us", load())[0]
    validate(result)
    out: dict[str, str] = {}
    for di in issues(result):
        out[di["identifier"][0]["value"]] = di["severity"]
    return out


def dose_line(dose: float, per_day: int) -> dict[str, Any]:
    return {"doseAndRate": [{"doseQuantity": {"value": dose, "unit": "mg", "system": UCUM,
                                              "code": "mg"}}],
            "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}}


def current_dispense(dose: float, per_day: int, handed: str) -> dict[str, Any]:
    return {"resourceType": "MedicationDispense", "id": "disp-1", "status": "completed",
            "subject": {"reference": "Patient/pat-1"},
            "medicationCodeableConcept": baclofen_concept(), "whenHandedOver": handed,
            "daysSupply": {"value": 30, "unit": "day", "system": UCUM, "code": "d"},
            "dosageInstruction": [dose_line(dose, per_day)]}


BIRTHS = {"child": "2019-03-01", "adult": "1975-03-01", "older": "1950-03-01"}
doses = st.sampled_from([2.5, 5, 7.5, 10, 15, 20, 25, 30, 40])
per_days = st.integers(min_value=1, max_value=4)


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    age = draw(st.sampled_from(sorted(BIRTHS)))
    context: list[dict[str, Any]] = []
    if draw(st.booleans()):
        context.append(obs("29463-7", draw(st.sampled_from([18, 25, 40, 70, 90])), "kg", id="wt"))
    renal = draw(st.sampled_from(["none", "egfr", "creatinine"]))
    if renal == "egfr":
        context.append(obs("62238-1", draw(st.sampled_from([10, 25, 40, 55, 75, 95])),
                           "mL/min/{1.73_m2}", id="egfr"))
    elif renal == "creatinine":
        context.append(obs("2160-0", draw(st.sampled_from([0.6, 1.0, 1.8, 3.5])),
                           "mg/dL", id="scr"))
        if age == "child":
            context.append(obs("8302-2", draw(st.sampled_from([95, 120, 150])), "cm", id="ht"))
    if draw(st.booleans()):
        context.append({"resourceType": "Condition", "id": "ckd",
                        "subject": {"reference": "Patient/pat-1"},
                        "code": {"coding": [{"system": ICD10, "code": "N18.9"}]}})
    if draw(st.booleans()):
        handed = draw(st.sampled_from(["2026-11-23T09:00:00Z", "2026-11-15T09:00:00Z",
                                       "2026-10-30T09:00:00Z"]))
        context.append(current_dispense(draw(doses), draw(per_days), handed))
    return {"age": age, "dose": draw(doses), "per_day": draw(per_days), "context": context}


def body_of(s: dict[str, Any]) -> dict[str, Any]:
    o = order(dose_line(s["dose"], s["per_day"]))
    return parameters(o, pat=patient(BIRTHS[s["age"]]), context=s["context"])


def without(s: dict[str, Any], what: str) -> dict[str, Any] | None:
    """``s`` without one input, or None when the scenario has no such input (or when the
    condition of the finding that would say so does not hold)."""
    t = copy.deepcopy(s)
    ctx = t["context"]
    ids = {r["id"] for r in ctx}
    if what == "weight":
        if "wt" not in ids or s["age"] != "child":
            return None
        t["context"] = [r for r in ctx if r["id"] != "wt"]
    elif what == "renal":
        holds = s["age"] == "older" or "ckd" in ids
        if not holds or not ids & {"egfr", "scr"}:
            return None
        t["context"] = [r for r in ctx if r["id"] not in {"egfr", "scr", "ht"}]
    elif what == "regimen-dose":
        if "disp-1" not in ids:
            return None
        for r in t["context"]:
            if r["id"] == "disp-1":
                del r["dosageInstruction"]
    return t


@PROPS
@given(s=scenarios(), what=st.sampled_from(["weight", "renal", "regimen-dose"]))
def test_removing_a_needed_input_never_silently_removes_a_finding(s, what):
    reduced = without(s, what)
    if reduced is None:
        return
    full, less = findings(body_of(s)), findings(body_of(reduced))
    lost = set(full) - set(less)
    if lost:
        added = (set(less) - set(full)) & CANNOT_RUN
        assert added, (what, sorted(lost), full, less)


@PROPS
@given(s=scenarios())
def test_removing_the_dose_is_never_silent(s):
    full = findings(body_of(s))
    o = order({"text": "take as directed",
               "timing": {"repeat": {"frequency": s["per_day"], "period": 1,
                                     "periodUnit": "d"}}})
    less = findings(parameters(o, pat=patient(BIRTHS[s["age"]]), context=s["context"]))
    if set(full) - set(less):
        assert "order.unverifiable-dose" in less, (full, less)


# --- brand-named or ATC-coded == generic-named --------------------------------------------------

BACLOFEN_NAMES = [
    baclofen_concept("baclofen 10 MG Oral Tablet"),
    {"text": "Lioresal 10 mg tablet"},
    {"text": "Baclofen10mg tablet"},
    {"coding": [{"system": ATC, "code": "M03BX01"}], "text": "10 mg tablet"},
]
INTERACTING = {
    "opioid": [{"text": "oxycodone 10 mg tablet"}, {"text": "OxyContin 10 mg"},
               {"coding": [{"system": ATC, "code": "N02AA05"}]}],
    "benzodiazepine": [{"text": "alprazolam 0.5 mg"}, {"text": "Xanax 0.5 mg"},
                       {"coding": [{"system": ATC, "code": "N05BA12"}]}],
    "gabapentinoid": [{"text": "gabapentin 300 mg"}, {"text": "Neurontin 300 mg"},
                      {"coding": [{"system": ATC, "code": "N03AX12"}]}],
    "ace inhibitor": [{"text": "lisinopril 10 mg"}, {"text": "Zestril 10 mg"},
                      {"coding": [{"system": ATC, "code": "C09AA03"}]}],
    "levodopa": [{"text": "carbidopa / levodopa 25/100"}, {"text": "Sinemet 25/100"},
                 {"coding": [{"system": ATC, "code": "N04BA02"}]}],
}


def med(concept: dict[str, Any], id: str) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": id, "status": "active",
            "intent": "order", "subject": {"reference": "Patient/pat-1"},
            "medicationCodeableConcept": concept}


@PROPS
@given(dose=doses, per_day=per_days, age=st.sampled_from(sorted(BIRTHS)),
       name=st.sampled_from(BACLOFEN_NAMES[1:]))
def test_a_brand_named_or_atc_coded_order_is_judged_like_the_generic(dose, per_day, age,
                                                                     name):
    def body(concept: dict[str, Any]) -> dict[str, Any]:
        return parameters(order(dose_line(dose, per_day), concept=concept),
                          pat=patient(BIRTHS[age]))
    assert findings(body(name)) == findings(body(BACLOFEN_NAMES[0]))


@PROPS
@given(dose=doses, per_day=per_days, age=st.sampled_from(sorted(BIRTHS)),
       classes=st.lists(st.sampled_from(sorted(INTERACTING)), min_size=1, max_size=3,
                        unique=True),
       form=st.integers(min_value=1, max_value=2))
def test_an_interacting_medicine_by_brand_or_atc_is_read_like_its_ingredient(
        dose, per_day, age, classes, form):
    def body(index: int) -> dict[str, Any]:
        context = [med(INTERACTING[c][index], f"m-{n}") for n, c in enumerate(classes)]
        return parameters(order(dose_line(dose, per_day)), pat=patient(BIRTHS[age]),
                          context=context)
    assert findings(body(form)) == findings(body(0))
