"""Builders for patient-context resources: lab results, weight, height, conditions,
procedures and baclofen history (one line of input per scenario)."""

from __future__ import annotations

from typing import Any

from tests.support.builders import SNOMED, UCUM, baclofen_concept, dosage

LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
EGFR = "62238-1"
CRCL = "2164-2"
CREAT = "2160-0"
CREAT_UMOL = "14682-9"

_n = {"i": 0}


def _id(prefix: str) -> str:
    _n["i"] += 1
    return f"{prefix}-{_n['i']}"


def obs(code: str, value: Any = None, unit: str | None = None, when: str = "2026-11-20",
        status: str = "final", id: str | None = None, comparator: str | None = None,
        string: str | None = None, issued: str | None = None) -> dict[str, Any]:
    o: dict[str, Any] = {
        "resourceType": "Observation", "id": id or _id("obs"), "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": "Patient/pat-1"},
    }
    if when:
        o["effectiveDateTime"] = when
    if issued:
        o["issued"] = issued
    if string is not None:
        o["valueString"] = string
    elif value is not None:
        q: dict[str, Any] = {"value": value}
        if unit:
            q.update(unit=unit, system=UCUM, code=unit)
        if comparator:
            q["comparator"] = comparator
        o["valueQuantity"] = q
    return o


def egfr(value: Any, when: str = "2026-11-20", **kw: Any) -> dict[str, Any]:
    return obs(EGFR, value, "mL/min/{1.73_m2}", when, **kw)


def crcl(value: Any, when: str = "2026-11-20", **kw: Any) -> dict[str, Any]:
    return obs(CRCL, value, "mL/min", when, **kw)


def creatinine(value: Any, unit: str | None = "mg/dL", when: str = "2026-11-20",
               code: str = CREAT, **kw: Any) -> dict[str, Any]:
    return obs(code, value, unit, when, **kw)


def weight(kg: Any, when: str = "2026-11-01", unit: str = "kg", **kw: Any) -> dict[str, Any]:
    return obs("29463-7", kg, unit, when, **kw)


def height(cm: Any, when: str = "2026-11-01", unit: str = "cm", **kw: Any) -> dict[str, Any]:
    return obs("8302-2", cm, unit, when, **kw)


def condition(code: str | None = "N18.6", system: str = ICD10, text: str | None = None,
              clinical: str | None = "active", verification: str | None = None,
              id: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if code:
        concept["coding"] = [{"system": system, "code": code}]
    if text:
        concept["text"] = text
    c: dict[str, Any] = {"resourceType": "Condition", "id": id or _id("cond"), "code": concept,
                         "subject": {"reference": "Patient/pat-1"}}
    if clinical:
        c["clinicalStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": clinical}]}
    if verification:
        c["verificationStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": verification}]}
    return c


def dialysis_procedure(when: str = "2026-11-20", status: str = "completed",
                       id: str | None = None) -> dict[str, Any]:
    return {"resourceType": "Procedure", "id": id or _id("proc"), "status": status,
            "code": {"coding": [{"system": SNOMED, "code": "302497006",
                                 "display": "Hemodialysis"}]},
            "subject": {"reference": "Patient/pat-1"}, "performedDateTime": when}


def history_request(dose: float = 10, frequency: int = 3, id: str = "old-1",
                    status: str = "active", start: str | None = "2026-11-01",
                    end: str | None = None, authored: str | None = None,
                    last_updated: str | None = None, **extra: Any) -> dict[str, Any]:
    d = dosage(dose, "mg", frequency)
    if start or end:
        bp: dict[str, Any] = {}
        if start:
            bp["start"] = start
        if end:
            bp["end"] = end
        d["timing"]["repeat"]["boundsPeriod"] = bp
    r: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": id, "status": status, "intent": "order",
        "subject": {"reference": "Patient/pat-1"},
        "medicationCodeableConcept": baclofen_concept(), "dosageInstruction": [d],
    }
    if authored:
        r["authoredOn"] = authored
    if last_updated:
        r["meta"] = {"lastUpdated": last_updated}
    r.update(extra)
    return r


def statement(dose: float = 10, frequency: int = 3, id: str = "stmt-1", status: str = "active",
              start: str | None = "2026-11-01", end: str | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "resourceType": "MedicationStatement", "id": id, "status": status,
        "subject": {"reference": "Patient/pat-1"},
        "medicationCodeableConcept": baclofen_concept(), "dosage": [dosage(dose, "mg", frequency)],
    }
    if start or end:
        s["effectivePeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    return s


def dispense(dose: float = 10, frequency: int = 3, id: str = "disp-1",
             handed: str | None = "2026-11-01T12:00:00Z", days_supply: float | None = 30,
             quantity: float | None = None, status: str = "completed") -> dict[str, Any]:
    d: dict[str, Any] = {
        "resourceType": "MedicationDispense", "id": id, "status": status,
        "subject": {"reference": "Patient/pat-1"},
        "medicationCodeableConcept": baclofen_concept(),
        "dosageInstruction": [dosage(dose, "mg", frequency)],
    }
    if handed:
        d["whenHandedOver"] = handed
    if days_supply is not None:
        d["daysSupply"] = {"value": days_supply, "unit": "day", "system": UCUM, "code": "d"}
    if quantity is not None:
        d["quantity"] = {"value": quantity, "unit": "tablet", "system": UCUM, "code": "{tbl}"}
    return d
