"""Building CDS Hooks requests for the tests, and reading the cards back."""

from __future__ import annotations

import uuid
from typing import Any

from flask.testing import FlaskClient

from service.cds.discovery import prefetch_templates
from service.knowledge import load
from tests.support.fhir_validate import validate

EXT = "baclofen-check.detectedIssue"
SIGN = "baclofen-order-sign"
SELECT = "baclofen-order-select"
PRESCRIBE = "baclofen-medication-prescribe"
VIEW = "baclofen-patient-view"
HOOKS = {SIGN: "order-sign", SELECT: "order-select", PRESCRIBE: "medication-prescribe",
         VIEW: "patient-view"}


def draft_bundle(*orders: dict[str, Any], type_: str | None = "collection") -> dict[str, Any]:
    b: dict[str, Any] = {"resourceType": "Bundle", "entry": [{"resource": o} for o in orders]}
    if type_:
        b["type"] = type_
    return b


def hook_call(
    *orders: dict[str, Any],
    service: str = SIGN,
    patient: dict[str, Any] | None = None,
    prefetch: dict[str, Any] | None = None,
    selections: list[str] | None = None,
    patient_id: str = "pat-1",
    empty_prefetch: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """A hook request; with ``empty_prefetch`` every key not given is sent as null (nothing
    there), so that the service has no reason to fetch."""

    context: dict[str, Any] = {"userId": "Practitioner/prac-1", "patientId": patient_id}
    if service == PRESCRIBE:
        context["medications"] = draft_bundle(*orders)
    elif service == VIEW:
        pass  # patient-view sends no orders: they come from the record (prefetch)
    else:
        context["draftOrders"] = draft_bundle(*orders)
    if service == SELECT:
        context["selections"] = selections or [f"MedicationRequest/{o['id']}" for o in orders]
    pf: dict[str, Any] = {}
    if empty_prefetch:
        pf = dict.fromkeys(prefetch_templates(load()))
    if patient is not None:
        pf["patient"] = patient
    pf.update(prefetch or {})
    body: dict[str, Any] = {
        "hook": HOOKS[service],
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": pf,
    }
    body.update(extra)
    return body


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"http://ehr.example/fhir/{r['resourceType']}/{r['id']}",
                       "resource": r, "search": {"mode": "match"}} for r in resources]}


def post(client: FlaskClient, body: Any, service: str = SIGN, **kw: Any) -> Any:
    return client.post(f"/cds-services/{service}", json=body, **kw)


def cards(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    data = resp.get_json()
    assert set(data) == {"cards"}
    for card in data["cards"]:
        issues = card.get("extension", {}).get(EXT)
        for di in issues if isinstance(issues, list) else [issues] if issues else []:
            validate(di)
    return list(data["cards"])


def topic(card: dict[str, Any]) -> str:
    return str(card["source"]["topic"]["code"])


def topics(card_list: list[dict[str, Any]]) -> list[str]:
    return sorted(topic(c) for c in card_list)


def rules_in(card_list: list[dict[str, Any]]) -> list[str]:
    """Every rule id carried by the cards (the gathered card's DetectedIssues included)."""
    out = []
    for card in card_list:
        issues = card.get("extension", {}).get(EXT)
        for di in issues if isinstance(issues, list) else [issues] if issues else []:
            out.append(di["identifier"][0]["value"])
    return sorted(out)
