"""Realistic request bodies for the benchmark (built here, independent of the test builders).

Dates are relative to ``now`` so that results stay fresh and the rules see a typical patient:
a 72-year-old woman on baclofen 10 mg three times a day whose prescriber signs an increase to
15 mg three times a day, with recent creatinine, eGFR, weight and height, and two other
active medicines (lisinopril, metformin).
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta
from typing import Any

JSON = dict[str, Any]

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
PATIENT_ID = "bench-pat-1"
SIGN_SERVICE = "baclofen-order-sign"


def _day(now: datetime, days_ago: float) -> str:
    return (now - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def patient(pid: str = PATIENT_ID) -> JSON:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1954-03-12",
            "name": [{"family": "Bench", "given": ["Ada"]}]}


def _concept(code: str, name: str, text: str) -> JSON:
    return {"coding": [{"system": RXNORM, "code": code, "display": name}], "text": text}


def medication_request(rid: str, concept: JSON, dose_mg: float, per_day: int, status: str,
                       authored: str, pid: str = PATIENT_ID, start: str | None = None) -> JSON:
    timing: JSON = {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}
    if start:
        timing["repeat"]["boundsPeriod"] = {"start": start}
    return {
        "resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": authored,
        "medicationCodeableConcept": concept,
        "dosageInstruction": [{
            "text": f"{dose_mg:g} mg {per_day} times a day",
            "route": {"coding": [{"system": SNOMED, "code": "26643006",
                                  "display": "Oral route"}]},
            "timing": timing,
            "doseAndRate": [{"doseQuantity": {"value": dose_mg, "unit": "mg", "system": UCUM,
                                              "code": "mg"}}],
        }],
    }


def draft_order(now: datetime, pid: str = PATIENT_ID, dose_mg: float = 15,
                rid: str = "bench-draft-1") -> JSON:
    return medication_request(rid, _concept("1292", "baclofen", "baclofen 5 MG Oral Tablet"),
                              dose_mg, 3, "draft", _day(now, 0.01), pid)


def active_medicines(now: datetime, pid: str = PATIENT_ID) -> list[JSON]:
    """Three active medicines: the current baclofen, lisinopril and metformin."""
    return [
        medication_request("bench-med-baclofen", _concept("1292", "baclofen",
                                                           "baclofen 10 MG Oral Tablet"),
                           10, 3, "active", _day(now, 45), pid, _day(now, 44)),
        medication_request("bench-med-lisinopril", _concept("29046", "lisinopril",
                                                             "lisinopril 10 MG Oral Tablet"),
                           10, 1, "active", _day(now, 200), pid, _day(now, 199)),
        medication_request("bench-med-metformin", _concept("6809", "metformin",
                                                            "metformin 500 MG Oral Tablet"),
                           500, 2, "active", _day(now, 400), pid, _day(now, 399)),
    ]


def observation(rid: str, code: str, display: str, value: float, unit: str, ucum: str,
                when: str, pid: str = PATIENT_ID) -> JSON:
    return {
        "resourceType": "Observation", "id": rid, "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory" if code not in {"29463-7", "8302-2"} else "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
    }


def results(now: datetime, pid: str = PATIENT_ID) -> dict[str, list[JSON]]:
    """Five renal and body-size results, by prefetch key."""
    return {
        "creatinine": [
            observation("bench-cr-1", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma",
                        1.1, "mg/dL", "mg/dL", _day(now, 4), pid),
            observation("bench-cr-2", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma",
                        1.0, "mg/dL", "mg/dL", _day(now, 60), pid),
        ],
        "egfr": [observation("bench-egfr-1", "62238-1", "eGFR (CKD-EPI)", 49,
                             "mL/min/1.73m2", "mL/min/{1.73_m2}", _day(now, 4), pid)],
        "weight": [observation("bench-wt-1", "29463-7", "Body weight", 61.5, "kg", "kg",
                               _day(now, 10), pid)],
        "height": [observation("bench-ht-1", "8302-2", "Body height", 162, "cm", "cm",
                               _day(now, 10), pid)],
    }


def searchset(resources: list[JSON], base: str = "https://ehr.example.org/fhir") -> JSON:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                       "search": {"mode": "match"}, "resource": r} for r in resources]}


def order_sign_call(now: datetime, templates: dict[str, str] | None, prefetch: bool = True,
                    fhir_server: str | None = None, token: str | None = None) -> JSON:
    """The typical order-sign call. With ``prefetch`` every key of ``templates`` is sent
    (empty search results for the kinds of data this patient has none of); without it none is
    and the service reads everything from ``fhir_server``."""
    pid = PATIENT_ID
    body: JSON = {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "userId": "Practitioner/bench-prac-1",
            "patientId": pid,
            "encounterId": "bench-enc-1",
            "draftOrders": {"resourceType": "Bundle", "type": "collection",
                            "entry": [{"resource": draft_order(now, pid)}]},
        },
    }
    if fhir_server:
        body["fhirServer"] = fhir_server
        body["fhirAuthorization"] = {"access_token": token or "bench-token",
                                     "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "baclofen-check"}
    if prefetch:
        by_key: dict[str, Any] = dict.fromkeys(templates or {})
        for key in by_key:
            by_key[key] = searchset([])
        by_key["patient"] = patient(pid)
        for key, found in results(now, pid).items():
            by_key[key] = searchset(found)
        by_key["medicationRequests"] = searchset(active_medicines(now, pid))
        body["prefetch"] = by_key
    return body


def server_resources(now: datetime) -> list[JSON]:
    """What the FHIR server holds for the self-fetch run: the same patient data."""
    out: list[JSON] = [patient()]
    for found in results(now).values():
        out += found
    out += active_medicines(now)
    return out


def one_order_parameters(now: datetime, dose_mg: float = 20, pid: str = PATIENT_ID) -> JSON:
    """Payload (a): one order with the patient and labs, as a $check Parameters."""
    labs = results(now, pid)
    context = labs["creatinine"][:1] + labs["weight"] + labs["height"]
    params: list[JSON] = [
        {"name": "order", "resource": draft_order(now, pid, dose_mg)},
        {"name": "patient", "resource": patient(pid)},
    ]
    params += [{"name": "context", "resource": r} for r in context]
    params.append({"name": "checkTime", "valueDateTime": _day(now, 0)})
    return {"resourceType": "Parameters", "parameter": params}


def review_bundle(now: datetime, entries: int = 200) -> JSON:
    """Payload (c): a review Bundle of ``entries`` entries (no draft: every active baclofen
    order is reviewed): the patient, two active baclofen orders, and years of history -
    results, conditions, other medicines, procedures."""
    pid = PATIENT_ID
    resources: list[JSON] = [patient(pid)]
    baclofen = _concept("1292", "baclofen", "baclofen 10 MG Oral Tablet")
    resources.append(medication_request("bench-rev-bac-1", baclofen, 10, 3, "active",
                                        _day(now, 30), pid, _day(now, 29)))
    resources.append(medication_request("bench-rev-bac-2", baclofen, 5, 1, "active",
                                        _day(now, 30), pid, _day(now, 29)))
    others = [("29046", "lisinopril", 10, 1), ("6809", "metformin", 500, 2),
              ("83367", "atorvastatin", 20, 1), ("7646", "omeprazole", 20, 1),
              ("1191", "aspirin", 81, 1), ("4603", "furosemide", 40, 1)]
    kinds = [("2160-0", "Creatinine", 1.0, "mg/dL", "mg/dL"),
             ("62238-1", "eGFR", 55, "mL/min/1.73m2", "mL/min/{1.73_m2}"),
             ("29463-7", "Body weight", 62, "kg", "kg"),
             ("8302-2", "Body height", 162, "cm", "cm"),
             ("2345-7", "Glucose", 110, "mg/dL", "mg/dL")]
    n = 0
    while len(resources) < entries:
        n += 1
        slot = n % 10
        if slot < 6:
            code, name, value, unit, ucum = kinds[n % len(kinds)]
            resources.append(observation(f"bench-rev-obs-{n}", code, name,
                                         value + (n % 7) * 0.1, unit, ucum,
                                         _day(now, 3 + n * 2), pid))
        elif slot < 8:
            rx, name, dose, per_day = others[n % len(others)]
            status = "active" if n < 40 else "completed"
            resources.append(medication_request(
                f"bench-rev-med-{n}", _concept(rx, name, f"{name} {dose} MG Oral Tablet"),
                dose, per_day, status, _day(now, 20 + n * 3), pid, _day(now, 19 + n * 3)))
        elif slot == 8:
            resources.append({
                "resourceType": "Condition", "id": f"bench-rev-cond-{n}",
                "clinicalStatus": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active"}]},
                "code": {"coding": [{"system": ICD10, "code": ["I10", "E11.9", "G35",
                                                                "M62.838"][n % 4]}]},
                "subject": {"reference": f"Patient/{pid}"},
                "onsetDateTime": _day(now, 500 + n)})
        else:
            resources.append({
                "resourceType": "Procedure", "id": f"bench-rev-proc-{n}", "status": "completed",
                "code": {"coding": [{"system": SNOMED, "code": "71388002",
                                     "display": "Procedure"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "performedDateTime": _day(now, 100 + n)})
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, r['id'])}",
                       "resource": r} for r in resources[:entries]]}


def ndjson_line(now: datetime, n: int) -> JSON:
    """One batch line: payload (a) with its own patient and a dose that varies by line."""
    body = one_order_parameters(now, dose_mg=[10, 15, 20, 25, 30][n % 5], pid=f"bench-pat-{n}")
    return copy.deepcopy(body)
