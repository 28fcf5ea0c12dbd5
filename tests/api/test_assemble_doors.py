"""One scenario through every front door's adapter: the same CheckRequest, the same findings.

The scenario: a 76-year-old man, a baclofen order of 20 mg four times a day, a creatinine of
2.0 mg/dL and a weight of 70 kg (Cockcroft-Gault about 31 mL/min), and an active oxycodone
order. At order time (the order a draft) it goes through the native Parameters and Bundle
bodies, an NDJSON line, the three order hooks and the by-id door; in review (the order
active) through a Bundle, patient-view, the by-id door, a notification's re-check and a
patient of a Bulk Data export. Each door's request, after the assembler's normalisation,
must agree in what the engine reads, and the engine must find the same.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from service.assemble.byid import from_server
from service.assemble.native import from_bundle, from_parameters
from service.batch import from_line
from service.cds.discovery import SERVICES, prefetch_templates
from service.cds.prefetch import gather
from service.cds.request import from_hook, parse_call
from service.cds.review import from_patient_view
from service.checkrequest import CheckRequest
from service.engine import run_check
from service.fhir_input.fetch import Deadline
from service.knowledge import load
from service.population.check import from_export
from service.population.export import Located, Record
from service.watch.worker import from_notification
from tests.support import builders as b
from tests.support.cdsclient import PRESCRIBE, SELECT, SIGN, VIEW, hook_call, searchset
from tests.support.context_builders import creatinine, weight

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
KB = load()
BASE = "http://ehr.example/fhir"

PATIENT = b.patient(birth_date="1950-03-01")
CREATININE = creatinine(2.0, id="cr-1")
WEIGHT = weight(70, id="wt-1")
OXYCODONE = {"resourceType": "MedicationRequest", "id": "oxy-1", "status": "active",
             "intent": "order", "subject": {"reference": "Patient/pat-1"},
             "authoredOn": "2026-11-01T09:00:00Z",
             "medicationCodeableConcept": {
                 "coding": [{"system": b.RXNORM, "code": "7804", "display": "oxycodone"}],
                 "text": "oxycodone 5 MG Oral Tablet"},
             "dosageInstruction": [b.dosage(5, frequency=4)]}
CONTEXT = [CREATININE, WEIGHT, OXYCODONE]


def baclofen(status: str) -> dict[str, Any]:
    return b.order(b.dosage(20, frequency=4), id="bac-1", status=status)


def fresh(*resources: dict[str, Any]) -> list[dict[str, Any]]:
    """Each door gets its own copy (the native doors normalise in place)."""
    return [copy.deepcopy(r) for r in resources]


# --- the doors -------------------------------------------------------------------------------

def via_parameters(status: str) -> CheckRequest:
    order, pat, *context = fresh(baclofen(status), PATIENT, *CONTEXT)
    return from_parameters(b.parameters(order, pat=pat, context=context), NOW, "us")


def via_bundle(status: str) -> CheckRequest:
    return from_bundle(b.bundle(*fresh(PATIENT, baclofen(status), *CONTEXT)), NOW, "us",
                       kb=KB)


def via_ndjson(status: str) -> CheckRequest:
    order, pat, *context = fresh(baclofen(status), PATIENT, *CONTEXT)
    line = json.dumps(b.parameters(order, pat=pat, context=context)).encode()
    return from_line(line, NOW, "us", KB)


def _prefetch() -> dict[str, Any]:
    pat, cr, wt, oxy = fresh(PATIENT, *CONTEXT)
    return {"patient": pat, "creatinine": searchset(cr), "weight": searchset(wt),
            "medicationRequests": searchset(oxy)}


def via_hook(service: str) -> Callable[[str], CheckRequest]:
    def door(status: str) -> CheckRequest:
        body = hook_call(*fresh(baclofen(status)), service=service, prefetch=_prefetch())
        call = parse_call(body, SERVICES[service])
        data = gather(call, prefetch_templates(KB), None)
        return from_hook(call, data, NOW, "us")
    return door


def via_patient_view(status: str) -> CheckRequest:
    prefetch = _prefetch()
    prefetch["medicationRequests"] = searchset(*fresh(OXYCODONE, baclofen(status)))
    call = parse_call(hook_call(service=VIEW, prefetch=prefetch), SERVICES[VIEW])
    data = gather(call, prefetch_templates(KB), None)
    return from_patient_view(call, data, NOW, "us", KB)


@dataclass
class FakeServer:
    """FHIR_SERVER_URL: reads by id, searches by resource type (the context is deduplicated
    by the reader, so every Observation query may answer every Observation)."""

    resources: list[dict[str, Any]]
    base_url: str = BASE

    def read(self, url: str, deadline: Deadline) -> dict[str, Any]:
        rtype, rid = url.split("/")
        return next(copy.deepcopy(r) for r in self.resources
                    if r["resourceType"] == rtype and r["id"] == rid)

    def search(self, url: str, deadline: Deadline) -> list[dict[str, Any]]:
        rtype = url.split("?")[0]
        return [copy.deepcopy(r) for r in self.resources if r["resourceType"] == rtype]


def via_by_id(status: str) -> CheckRequest:
    server: Any = FakeServer([PATIENT, baclofen(status), *CONTEXT])
    return from_server(server, "bac-1", Deadline(10), NOW, "us", KB)


def via_notification(status: str) -> CheckRequest:
    server: Any = FakeServer([PATIENT, baclofen(status), *CONTEXT])
    return from_notification(server, "bac-1", Deadline(10), NOW, "us", KB)


def via_export(status: str) -> CheckRequest:
    lines = [Located(r["resourceType"], f"{r['resourceType']}.ndjson", 1, json.dumps(r))
             for r in (PATIENT, baclofen(status), *CONTEXT)]
    return from_export(Record("pat-1", lines), NOW, "us", KB)


ORDER_DOORS: dict[str, Callable[[str], CheckRequest]] = {
    "parameters": via_parameters, "bundle": via_bundle, "ndjson": via_ndjson,
    "order-sign": via_hook(SIGN), "order-select": via_hook(SELECT),
    "medication-prescribe": via_hook(PRESCRIBE), "by-id": via_by_id,
}
REVIEW_DOORS: dict[str, Callable[[str], CheckRequest]] = {
    "bundle": via_bundle, "patient-view": via_patient_view, "by-id": via_by_id,
    "watch": via_notification, "bulk": via_export,
}
HOOKS = {"order-sign": "order-sign", "order-select": "order-select",
         "medication-prescribe": "medication-prescribe", "patient-view": "patient-view"}


def what_matters(req: CheckRequest) -> dict[str, Any]:
    """The fields the engine reads, after normalisation (not the order items come in)."""
    return {
        "patient": req.patient.ref if req.patient else None,
        "patient_resource": req.patient.resource if req.patient else None,
        "orders": [it.ref for it in req.orders],
        "order_resources": [it.resource for it in req.orders],
        "context": sorted(it.ref for it in req.context),
        "context_resources": sorted(json.dumps(it.resource, sort_keys=True)
                                     for it in req.context),
        "unavailable": req.unavailable,
        "mode": req.mode,
        "check_time": req.check_time,
        "profile": req.profile,
    }


def findings(req: CheckRequest) -> list[tuple[str, str, str]]:
    return sorted((f.rule_id, f.severity, f.order_ref) for f in run_check(req, KB).findings)


@pytest.mark.parametrize(("status", "doors", "mode"), [
    pytest.param("draft", ORDER_DOORS, "order", id="order-time"),
    pytest.param("active", REVIEW_DOORS, "review", id="review"),
])
def test_every_door_assembles_the_same_request_and_findings(
        status: str, doors: dict[str, Callable[[str], CheckRequest]], mode: str) -> None:
    built = {name: door(status) for name, door in doors.items()}
    reference = what_matters(built["bundle"])
    expected = findings(built["bundle"])
    assert reference["mode"] == mode
    assert reference["orders"] == ["MedicationRequest/bac-1"]
    assert reference["context"] == ["MedicationRequest/oxy-1", "Observation/cr-1",
                                    "Observation/wt-1"]
    assert reference["unavailable"] == []
    rules = {rule for rule, _severity, _order in expected}
    assert any(r.startswith("renal.") for r in rules), expected
    assert any(r.startswith("interaction") for r in rules), expected
    for name, req in built.items():
        assert what_matters(req) == reference, name
        assert req.hook == HOOKS.get(name), name
        assert findings(req) == expected, name
