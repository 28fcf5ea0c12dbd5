"""Warm a worker before it serves: the first check in a fresh process costs about 130 ms
(models imported and built, patterns compiled, caches filled) against about 3 ms after it, so a
worker runs one made-up check of its own first. Nothing is recorded, fetched or logged but a
failure's type; a worker that cannot warm up still serves (its first call is just slower).

The order is a made-up sample that reaches most of the checker (renal, age, interactions,
cards); its numbers are inputs, not clinical thresholds.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from .checker import check_body
from .fhirjson import JSON
from .knowledge import Knowledge
from .output.cards import render_cards

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def sample_body(now: datetime) -> JSON:
    """A Parameters body: a baclofen draft for a made-up older patient with a creatinine,
    a weight and another medicine."""
    day = (now - timedelta(days=2)).isoformat(timespec="seconds")
    subject = {"reference": "Patient/warm-up"}

    def obs(oid: str, code: str, value: float, unit: str) -> JSON:
        return {"resourceType": "Observation", "id": oid, "status": "final", "subject": subject,
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "effectiveDateTime": day,
                "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}

    order = {
        "resourceType": "MedicationRequest", "id": "warm-up-order", "status": "draft",
        "intent": "order", "subject": subject, "authoredOn": now.isoformat(timespec="seconds"),
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1292",
                                                  "display": "baclofen"}]},
        "dosageInstruction": [{"route": {"text": "oral"}, "timing": {"repeat": {
            "frequency": 3, "period": 1, "periodUnit": "d"}}, "doseAndRate": [{
                "doseQuantity": {"value": 20, "unit": "mg", "system": UCUM, "code": "mg"}}]}],
    }
    other = {
        "resourceType": "MedicationRequest", "id": "warm-up-other", "status": "active",
        "intent": "order", "subject": subject, "authoredOn": day,
        "medicationCodeableConcept": {"text": "gabapentin 300 mg oral capsule"},
    }
    patient = {"resourceType": "Patient", "id": "warm-up", "gender": "female",
               "birthDate": f"{now.year - 80}-01-01"}
    context = [obs("warm-up-cr", "2160-0", 1.4, "mg/dL"), obs("warm-up-wt", "29463-7", 60, "kg"),
               other]
    return {"resourceType": "Parameters", "parameter": [
        {"name": "order", "resource": order}, {"name": "patient", "resource": patient},
        *({"name": "context", "resource": r} for r in context)]}


def warm_up(kb: Knowledge, profile: str = "us", now: datetime | None = None) -> bool:
    """Run the sample through the checker and the card renderer with the app's knowledge;
    True when it ran."""
    when = now or datetime.now(UTC)
    try:
        _bundle, req, outcome = check_body(sample_body(when), when, profile, kb)
        render_cards(req, outcome, kb)
    except Exception as exc:  # noqa: BLE001 - warming must never stop a worker from serving
        logging.getLogger("baclofen_check").warning(
            "warm-up failed", extra={"event": "warm-up-failed", "error_type": type(exc).__name__})
        return False
    return True


def app_profile(app: Any) -> str | None:
    """The profile of a baclofen-check Flask app, or None for any other WSGI app."""
    settings = getattr(getattr(app, "config", None), "get", lambda _k: None)("SETTINGS")
    profile = getattr(settings, "profile", None)
    return profile if isinstance(profile, str) else None
