"""Small builders of realistic FHIR JSON for tests (one line of input per scenario)."""

from __future__ import annotations

from typing import Any

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
CHECK_TIME = "2026-11-25T10:00:00Z"

UCUM_CODES = {"mg": "mg", "g": "g", "ug": "ug", "mcg": "ug", "mL": "mL", "tablet": "{tbl}"}


def baclofen_concept(text: str = "baclofen 10 MG Oral Tablet") -> dict[str, Any]:
    return {"coding": [{"system": RXNORM, "code": "1292", "display": "baclofen"}], "text": text}


def dosage(
    dose: float | None = 10,
    unit: str = "mg",
    frequency: int | None = 3,
    period: float = 1,
    period_unit: str = "d",
    **extra: Any,
) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if dose is not None:
        q: dict[str, Any] = {"value": dose, "unit": unit}
        if unit in UCUM_CODES:
            q.update(system=UCUM, code=UCUM_CODES[unit])
        d["doseAndRate"] = [{"doseQuantity": q}]
    if frequency is not None:
        d["timing"] = {"repeat": {"frequency": frequency, "period": period,
                                  "periodUnit": period_unit}}
    d.update(extra)
    return d


def order(
    *dosages: dict[str, Any],
    id: str = "ord-1",
    status: str = "draft",
    concept: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    o: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/pat-1"},
        "authoredOn": "2026-11-25T09:00:00Z",
        "medicationCodeableConcept": concept or baclofen_concept(),
        "dosageInstruction": list(dosages) if dosages else [dosage()],
    }
    o.update(extra)
    return o


def patient(birth_date: str = "1970-05-01", gender: str = "male", id: str = "pat-1"
            ) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": id, "birthDate": birth_date, "gender": gender}


def parameters(*orders: dict[str, Any], pat: dict[str, Any] | None = None,
               context: list[dict[str, Any]] | None = None, check_time: str = CHECK_TIME,
               profile: str | None = None) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "order", "resource": o} for o in orders]
    params.append({"name": "patient", "resource": pat or patient()})
    params += [{"name": "context", "resource": c} for c in context or []]
    params.append({"name": "checkTime", "valueDateTime": check_time})
    if profile:
        params.append({"name": "profile", "valueCode": profile})
    return {"resourceType": "Parameters", "parameter": params}


def bundle(*resources: dict[str, Any], type_: str | None = "collection") -> dict[str, Any]:
    b: dict[str, Any] = {"resourceType": "Bundle",
                         "entry": [{"resource": r} for r in resources]}
    if type_:
        b["type"] = type_
    return b


def issues(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in result.get("entry", [])
            if e["resource"]["resourceType"] == "DetectedIssue"]


def rule_ids(result: dict[str, Any]) -> list[str]:
    return sorted(di["identifier"][0]["value"] for di in issues(result))


def by_rule(result: dict[str, Any], rule_id: str) -> dict[str, Any]:
    found = [di for di in issues(result) if di["identifier"][0]["value"] == rule_id]
    assert len(found) == 1, f"expected one {rule_id}, got {rule_ids(result)}"
    return found[0]


def outcome(result: dict[str, Any]) -> dict[str, Any] | None:
    for e in result.get("entry", []):
        if e["resource"]["resourceType"] == "OperationOutcome":
            return e["resource"]
    return None


# --- intrathecal orders -------------------------------------------------------------------

IT_ROUTE = {"coding": [{"system": SNOMED, "code": "72607000", "display": "Intrathecal"}]}


def it_order(*dosages: dict[str, Any], **kw: Any) -> dict[str, Any]:
    concept = {"coding": [{"system": RXNORM, "code": "1292", "display": "baclofen"}],
               "text": "baclofen 2000 MCG/ML Injection"}
    return order(*dosages, concept=concept, **kw)


def it_dose(value: float, unit: str = "ug", **timing: Any) -> dict[str, Any]:
    d = dosage(value, unit, None, route=IT_ROUTE)
    if timing:
        d["timing"] = {"repeat": timing}
    return d
