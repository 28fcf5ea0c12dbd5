"""A generated population with injected hazards: every hazard is caught (issue 4).

Each patient gets a realistic context (creatinine and weight results, sometimes an eGFR, other
medicines). A share of them get one injected hazard; the test asserts the hazard's rule fires
at the expected severity or worse, and that safe patients get no ceiling finding at all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tests.support.builders import (
    SNOMED,
    dosage,
    it_dose,
    it_order,
    order,
    parameters,
    patient,
    rule_ids,
)
from tests.support.checks import run
from tests.support.context_builders import obs

RANK = {"low": 1, "moderate": 2, "high": 3}
CEILINGS = ("oral.max-daily", "oral.probable-error", "renal.dose-band", "renal.dialysis",
            "intrathecal.mg-unit", "intrathecal.max-daily", "geriatric.renal")


@dataclass
class Person:
    born: str
    gender: str
    weight_kg: float
    creatinine_mg_dl: float
    hazard: str | None


def expected_crcl(p: Person) -> float:
    age = 2026 - int(p.born[:4]) - 1   # birthdays are in December: not yet this year
    value = (140 - age) * p.weight_kg / (72 * p.creatinine_mg_dl)
    return value * (0.85 if p.gender == "female" else 1)


def build(p: Person, rng: random.Random) -> tuple[dict[str, Any], str, str]:
    """(request body, the rule the hazard must raise, its least severity)."""
    context = [obs("29463-7", p.weight_kg, "kg", "2026-11-20", id="wt"),
               obs("2160-0", p.creatinine_mg_dl, "mg/dL", "2026-11-21", id="scr")]
    if rng.random() < 0.3:
        context.append({"resourceType": "MedicationRequest", "id": "lisinopril",
                        "status": "active", "intent": "order",
                        "subject": {"reference": "Patient/pat-1"},
                        "medicationCodeableConcept": {"text": "lisinopril 10 MG Oral Tablet"}})
    pat = patient(p.born, p.gender)
    if p.hazard == "overdose":
        return parameters(order(dosage(40, "mg", 3)), pat=pat, context=context), \
            "oral.max-daily", "high"
    if p.hazard == "crcl_below_30":
        return parameters(order(dosage(10, "mg", 3)), pat=pat, context=context), \
            "renal.dose-band", "high"
    if p.hazard == "dialysis":
        context.append({"resourceType": "Condition", "id": "esrd",
                        "subject": {"reference": "Patient/pat-1"},
                        "clinicalStatus": {"coding": [{"code": "active"}]},
                        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                             "code": "Z99.2"}], "text": "Dependence on dialysis"}})
        return parameters(order(dosage(5, "mg", 3)), pat=pat, context=context), \
            "renal.dialysis", "high"
    if p.hazard == "it_in_mg":
        d = it_dose(50, "mg", frequency=1, period=1, periodUnit="d")
        return parameters(it_order(d), pat=pat, context=context), "intrathecal.mg-unit", "high"
    # safe: 5 mg three times a day
    return parameters(order(dosage(5, "mg", 3)), pat=pat, context=context), "", ""


def population(n: int, seed: int) -> list[Person]:
    rng = random.Random(seed)
    people = []
    for i in range(n):
        hazard = rng.choice([None, None, "overdose", "crcl_below_30", "dialysis", "it_in_mg"])
        year = rng.randint(1940, 2000)
        weight = round(rng.uniform(55, 95), 1)
        if hazard == "crcl_below_30":
            creatinine = 4.5   # CrCl below 30 for every age and weight drawn here
        else:
            creatinine = round(rng.uniform(0.6, 0.9), 2)
        people.append(Person(f"{year}-12-{(i % 27) + 1:02d}", rng.choice(["male", "female"]),
                             weight, creatinine, hazard))
    return people


def test_injected_hazards_are_all_caught() -> None:
    rng = random.Random(7)
    missed: list[str] = []
    checked = {"overdose": 0, "crcl_below_30": 0, "dialysis": 0, "it_in_mg": 0, None: 0}
    for p in population(160, seed=11):
        body, rule, least = build(p, rng)
        result = run(body)
        checked[p.hazard] += 1
        found = {e["resource"]["identifier"][0]["value"]: e["resource"]["severity"]
                 for e in result["entry"] if e["resource"]["resourceType"] == "DetectedIssue"}
        if p.hazard is None:
            older = int(p.born[:4]) <= 1961
            crcl = expected_crcl(p)
            if crcl > 80 and not older:
                assert not set(found) & set(CEILINGS), (p, rule_ids(result))
            continue
        if p.hazard == "crcl_below_30":
            assert expected_crcl(p) < 30, p
            if expected_crcl(p) < 15:   # a renal value below 15 is end-stage (section 2)
                rule = "renal.dialysis"
        if rule not in found or RANK[found[rule]] < RANK[least]:
            missed.append(f"{p}: expected {rule} {least}, got {found}")
    assert not missed, "\n".join(missed)
    assert all(count > 10 for count in checked.values()), checked


def test_dialysis_procedure_is_caught_too() -> None:
    proc = {"resourceType": "Procedure", "id": "hd", "status": "completed",
            "subject": {"reference": "Patient/pat-1"},
            "code": {"coding": [{"system": SNOMED, "code": "302497006"}], "text": "Hemodialysis"},
            "performedDateTime": "2026-11-20T08:00:00Z"}
    result = run(parameters(order(dosage(5, "mg", 3)), context=[proc]))
    assert "renal.dialysis" in rule_ids(result)
