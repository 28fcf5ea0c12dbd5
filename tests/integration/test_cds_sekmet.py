"""CDS Hooks against a real FHIR server (sekmet, started by the session fixture).

Each scenario's patient data is loaded over REST, then the same order is checked three ways:
(a) order-sign with a prefetch built by running the service's own discovery templates against
the server, as an EHR does; (b) order-sign with no prefetch, the service fetching from the
server itself; (c) the native FHIR endpoint with every resource given. All three must yield the
same high/moderate findings.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from tests.support import builders as b
from tests.support.cdsclient import EXT, cards, hook_call, post
from tests.support.checks import AUTH, CLOCK, CLOCK_TIME
from tests.support.services import Sekmet

LOINC = "http://loinc.org"


def observation(pid: str, code: str, value: float, unit: str, days_ago: int = 3,
                **extra: Any) -> dict[str, Any]:
    when = (CLOCK_TIME - timedelta(days=days_ago)).strftime("%Y-%m-%dT08:00:00Z")
    return {"resourceType": "Observation", "id": f"{pid}-{code}-{value}".replace(".", "-"),
            "status": "final", "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit}, **extra}


def med_request(pid: str, id: str, text: str, status: str = "active") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": id, "status": status, "intent": "order",
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2026-10-01",
            "medicationCodeableConcept": {"text": text}}


def scenario(name: str, pid: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(patient, context resources, draft order) for one named scenario."""
    order = b.order(b.dosage(20, frequency=3), id=f"{pid}-draft",
                    subject={"reference": f"Patient/{pid}"})
    if name == "renal_older_woman":
        pat = b.patient("1940-03-01", "female", id=pid)
        ctx = [observation(pid, "2160-0", 2.4, "mg/dL"), observation(pid, "29463-7", 58, "kg")]
    elif name == "adult_overdose":
        pat = b.patient("1975-06-01", "male", id=pid)
        ctx = [observation(pid, "33914-3", 95, "mL/min/{1.73_m2}")]
        order = b.order(b.dosage(40, frequency=3), id=f"{pid}-draft",
                        subject={"reference": f"Patient/{pid}"})
    elif name == "opioid_and_egfr_40":
        pat = b.patient("1960-01-01", "male", id=pid)
        ctx = [med_request(pid, f"{pid}-oxy", "oxycodone 5 MG Oral Tablet"),
               observation(pid, "62238-1", 40, "mL/min/{1.73_m2}")]
    elif name == "opioid_by_medication_reference":
        pat = b.patient("1965-01-01", "female", id=pid)
        oxy = {"resourceType": "Medication", "id": f"{pid}-oxy-med",
               "code": {"coding": [{"system": b.RXNORM, "code": "7804",
                                    "display": "oxycodone"}]}}
        ms = {"resourceType": "MedicationStatement", "id": f"{pid}-ms", "status": "active",
              "medicationReference": {"reference": f"Medication/{pid}-oxy-med"},
              "subject": {"reference": f"Patient/{pid}"}}
        mr = med_request(pid, f"{pid}-mr", "x")
        del mr["medicationCodeableConcept"]
        mr["medicationReference"] = {"reference": f"Medication/{pid}-oxy-med"}
        ctx = [oxy, ms, mr]
    elif name == "dialysis":
        pat = b.patient("1970-01-01", "male", id=pid)
        ctx = [{"resourceType": "Condition", "id": f"{pid}-esrd",
                "clinicalStatus": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active"}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                     "code": "N18.6", "display": "End stage renal disease"}]},
                "subject": {"reference": f"Patient/{pid}"}}]
    elif name == "history_many_results":
        # more creatinine results than one page: the newest (high) one must be used
        pat = b.patient("1950-01-01", "female", id=pid)
        ctx = [observation(pid, "2160-0", 0.7, "mg/dL", days_ago=d + 5) for d in range(15)]
        ctx += [observation(pid, "2160-0", 3.1, "mg/dL", days_ago=1),
                observation(pid, "29463-7", 60, "kg")]
    else:
        raise AssertionError(name)
    return pat, ctx, order


SCENARIOS = ["renal_older_woman", "adult_overdose", "opioid_and_egfr_40", "dialysis",
             "history_many_results", "opioid_by_medication_reference"]


@pytest.fixture
def fhir_app(tmp_path: Path, sekmet: Sekmet) -> Flask:
    return create_app({"CDS_REQUIRE_JWT": False, "API_REQUIRE_AUTH": True,
                       "API_TOKENS": AUTH["Authorization"].split()[1],
                       "FHIR_ALLOWLIST": sekmet.base_url, "OUTBOUND_TIMEOUT_S": 10,
                       "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "TESTING": True},
                      clock=CLOCK)


def load_into(sekmet: Sekmet, resources: list[dict[str, Any]]) -> None:
    for res in resources:
        sekmet.put(res)


def prefetch_from_templates(app_client: FlaskClient, sekmet: Sekmet, pid: str
                            ) -> dict[str, Any]:
    """What an EHR does: run each discovery template against its FHIR server."""
    service = next(s for s in app_client.get("/cds-services").get_json()["services"]
                   if s["id"] == "baclofen-order-sign")
    out: dict[str, Any] = {}
    for key, template in service["prefetch"].items():
        url = template.replace("{{context.patientId}}", pid)
        resp = requests.get(f"{sekmet.base_url}/{url}", headers=sekmet.headers(), timeout=10)
        out[key] = resp.json() if resp.status_code == 200 else None
    return out


def high_moderate(card_list: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((c["extension"][EXT]["identifier"][0]["value"],
                   c["extension"][EXT]["severity"]) for c in card_list
                  if c["indicator"] in {"critical", "warning"})


def three_ways(client: Any, sekmet: Sekmet, pid: str, pat: dict[str, Any],
               orders: list[dict[str, Any]], ctx: list[dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, str]]]:
    """The same orders checked three ways: CDS with the prefetch an EHR builds from our
    templates, CDS fetching from sekmet itself, and native $check. Returns the two card lists
    and the native (rule, severity) pairs of high and moderate findings."""
    prefetch = prefetch_from_templates(client, sekmet, pid)
    assert prefetch["patient"]["id"] == pid
    with_prefetch = cards(post(client, hook_call(*orders, patient_id=pid, prefetch=prefetch)))
    body = hook_call(*orders, patient_id=pid, empty_prefetch=False)
    body["fhirServer"] = sekmet.base_url
    body["fhirAuthorization"] = {"access_token": sekmet.token, "token_type": "Bearer",
                                 "expires_in": 300, "scope": "patient/*.read",
                                 "subject": "baclofen-check"}
    self_fetched = cards(post(client, body))
    native = client.post("/MedicationRequest/$check", json=b.parameters(
        *orders, pat=pat, context=ctx, check_time=_now()), headers={
            "Content-Type": "application/fhir+json", **AUTH})
    assert native.status_code == 200, native.get_data(as_text=True)
    expected = sorted(
        (e["resource"]["identifier"][0]["value"], e["resource"]["severity"])
        for e in native.get_json()["entry"]
        if e["resource"]["resourceType"] == "DetectedIssue"
        and e["resource"]["severity"] in {"high", "moderate"})
    return with_prefetch, self_fetched, expected


@pytest.mark.parametrize("name", SCENARIOS)
def test_prefetch_self_fetch_and_native_agree(fhir_app: Flask, sekmet: Sekmet,
                                              name: str) -> None:
    client = fhir_app.test_client()
    pid = f"{name.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    pat, ctx, order = scenario(name, pid)
    load_into(sekmet, [pat, *ctx])

    with_prefetch, self_fetched, expected = three_ways(client, sekmet, pid, pat, [order], ctx)
    assert expected, name
    assert high_moderate(with_prefetch) == expected
    assert high_moderate(self_fetched) == expected
    for got in (with_prefetch, self_fetched):
        assert "context.unavailable" not in str(got), name


def _now() -> str:
    """The check time of the native calls: the app's (fixed) clock, as for the CDS calls."""
    return CLOCK_TIME.isoformat(timespec="seconds").replace("+00:00", "Z")


# --- every scenario fixture, loaded into the server ------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SUBJECT_TYPES = {"Observation", "Condition", "Procedure", "MedicationRequest",
                 "MedicationStatement", "MedicationDispense", "MedicationAdministration"}


def _scenario_files() -> list[Path]:
    files = sorted(FIXTURES.glob("params-*.json")) + sorted(FIXTURES.glob("patient-context-*"))
    return files + sorted(FIXTURES.glob("demo-*.json"))


def _split(doc: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]],
                                         list[dict[str, Any]]]:
    """(patient, draft orders, context) of a Parameters or Bundle fixture."""
    if doc["resourceType"] == "Parameters":
        res = [(p["name"], p["resource"]) for p in doc["parameter"] if "resource" in p]
        pat = next((r for n, r in res if n == "patient"), None)
        orders = [r for n, r in res if n == "order"]
        ctx = [r for n, r in res if n == "context"]
    else:
        all_res = [e["resource"] for e in doc["entry"]]
        pat = next((r for r in all_res if r["resourceType"] == "Patient"), None)
        orders = [r for r in all_res if r["resourceType"] == "MedicationRequest"
                  and r.get("status") == "draft"]
        ctx = [r for r in all_res if r is not pat and not any(r is o for o in orders)]
    assert pat is not None
    return pat, orders, ctx


def _renamed(value: Any, ids: dict[str, str]) -> Any:
    """A copy with every ``Type/id`` reference and resource id moved to this run's ids."""
    if isinstance(value, dict):
        out = {k: _renamed(v, ids) for k, v in value.items()}
        key = f"{value.get('resourceType')}/{value.get('id')}"
        if key in ids:
            out["id"] = ids[key].split("/")[1]
        if isinstance(value.get("reference"), str):
            ref = value["reference"]
            tail = "/".join(ref.split("/")[-2:])
            if tail in ids:
                out["reference"] = ids[tail]
        return out
    if isinstance(value, list):
        return [_renamed(v, ids) for v in value]
    return value


@pytest.mark.parametrize("path", _scenario_files(), ids=lambda p: p.stem)
def test_fixture_scenarios_agree_through_the_server(fhir_app: Flask, sekmet: Sekmet,
                                                    path: Path) -> None:
    pat, orders, ctx = _split(json.loads(path.read_text()))
    if not orders or any(o.get("status") != "draft" for o in orders):
        pytest.skip("CDS Hooks has no hook that carries a stop")  # none of ours today
    suffix = uuid.uuid4().hex[:6]
    ids: dict[str, str] = {}
    for n, res in enumerate([pat, *orders, *ctx]):
        rid = res.get("id") or f"r{n}"
        res.setdefault("id", rid)
        ids[f"{res['resourceType']}/{rid}"] = f"{res['resourceType']}/{rid[:50]}-{suffix}"
    pat, orders, ctx = (_renamed(pat, ids), _renamed(orders, ids), _renamed(ctx, ids))
    pid = pat["id"]
    for res in ctx:
        if res["resourceType"] in SUBJECT_TYPES:
            res.setdefault("subject", {"reference": f"Patient/{pid}"})
    load_into(sekmet, [pat, *ctx])
    client = fhir_app.test_client()

    with_prefetch, self_fetched, expected = three_ways(client, sekmet, pid, pat, orders, ctx)
    assert high_moderate(with_prefetch) == expected
    assert high_moderate(self_fetched) == expected
