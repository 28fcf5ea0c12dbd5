"""POST /MedicationRequest/{id}/$check against the real sekmet FHIR server, and write-back."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.store import get_store
from tests.support.builders import (
    by_rule,
    dosage,
    issues,
    order,
    outcome,
    parameters,
    patient,
    rule_ids,
)
from tests.support.checks import AUTH, WRITE_TOKEN, make_app
from tests.support.context_builders import creatinine, weight
from tests.support.fhir_validate import validate
from tests.support.httpstub import StubServer, stub_server
from tests.support.services import Sekmet, free_port

WRITE = {"Authorization": f"Bearer {WRITE_TOKEN}"}


@pytest.fixture
def app(tmp_path: Path, sekmet: Sekmet) -> Flask:
    return make_app(tmp_path, sekmet.base_url, sekmet.token)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def load_case(sekmet: Sekmet, dose_mg: float = 40) -> tuple[str, str]:
    """A patient with a draft baclofen order of ``dose_mg`` three times a day; returns ids."""
    tag = uuid.uuid4().hex[:10]
    pid, oid = f"p-{tag}", f"o-{tag}"
    sekmet.put(patient(id=pid, birth_date="1970-05-01"))
    o = order(dosage(dose_mg), id=oid, status="draft",
              subject={"reference": f"Patient/{pid}"})
    sekmet.put(o)
    sekmet.put({"resourceType": "Condition", "id": f"c-{tag}", "subject": {
        "reference": f"Patient/{pid}"}, "code": {"text": "multiple sclerosis"}})
    return pid, oid


def check(client: FlaskClient, oid: str, persist: bool = False,
          headers: dict[str, str] | None = None) -> Any:
    url = f"/MedicationRequest/{oid}/$check" + ("?persist=true" if persist else "")
    if headers is None:
        headers = WRITE if persist else AUTH
    return client.post(url, headers=headers)


def test_an_order_on_the_server_is_checked_by_id(client: FlaskClient, app: Flask,
                                                 sekmet: Sekmet) -> None:
    pid, oid = load_case(sekmet)
    resp = check(client, oid)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    result = resp.get_json()
    validate(result)
    issue = by_rule(result, "oral.max-daily")
    assert issue["severity"] == "high"
    assert "120 mg/day" in issue["detail"]
    assert issue["patient"] == {"reference": f"Patient/{pid}"}
    assert issue["implicated"][0] == {"reference": f"MedicationRequest/{oid}"}
    assert "context.unavailable" not in rule_ids(result)
    counts = get_store(app).counts()
    assert (counts["checks"], counts["findings"]) == (1, len(issues(result)))


def test_persist_writes_once_and_a_repeat_writes_nothing_new(client: FlaskClient,
                                                             sekmet: Sekmet) -> None:
    _pid, oid = load_case(sekmet)
    first = check(client, oid, persist=True)
    assert first.status_code == 200, first.get_data(as_text=True)
    written = {di["id"]: di for di in issues(first.get_json())}
    assert written and all(i.startswith("bc-") for i in written)
    for entry in first.get_json()["entry"]:
        if entry["resource"]["resourceType"] == "DetectedIssue":
            assert entry["fullUrl"] == f"{sekmet.base_url}/DetectedIssue/{entry['resource']['id']}"
    for sid in written:
        stored = sekmet.get(f"DetectedIssue/{sid}").json()
        validate(stored)
        assert stored["meta"]["versionId"] == "1"
        assert stored["status"] == "final"
        assert stored["implicated"][0] == {"reference": f"MedicationRequest/{oid}"}
    second = check(client, oid, persist=True)
    assert second.status_code == 200
    assert {di["id"] for di in issues(second.get_json())} == set(written)
    for sid in written:
        assert sekmet.get(f"DetectedIssue/{sid}").json()["meta"]["versionId"] == "1"


def test_persist_cancels_what_no_longer_applies(client: FlaskClient, app: Flask,
                                               sekmet: Sekmet) -> None:
    pid, oid = load_case(sekmet, dose_mg=40)
    first = check(client, oid, persist=True)
    old = by_rule(first.get_json(), "oral.max-daily")["id"]
    # the prescriber lowers the dose: 10 mg three times a day no longer exceeds the ceiling
    sekmet.put(order(dosage(10), id=oid, status="draft", subject={"reference": f"Patient/{pid}"}))
    second = check(client, oid, persist=True)
    assert second.status_code == 200
    result = second.get_json()
    validate(result)
    assert "oral.max-daily" not in rule_ids(result)
    note = outcome(result)
    assert note is not None
    assert any(f"DetectedIssue/{old}" in i["diagnostics"] and i["severity"] == "information"
               for i in note["issue"])
    stored = sekmet.get(f"DetectedIssue/{old}").json()
    validate(stored)
    assert stored["status"] == "cancelled"
    persisted = get_store(app).persisted_for_order(f"MedicationRequest/{oid}")
    assert {p.server_id: p.status for p in persisted}[old] == "cancelled"


def test_persist_needs_a_write_token(client: FlaskClient, sekmet: Sekmet) -> None:
    _pid, oid = load_case(sekmet)
    resp = check(client, oid, persist=True, headers=AUTH)
    assert resp.status_code == 403
    assert resp.get_json()["issue"][0]["code"] == "forbidden"
    assert check(client, oid, headers={}).status_code == 401


def test_order_not_on_the_server_is_502_naming_the_call(client: FlaskClient) -> None:
    resp = check(client, "no-such-order")
    assert resp.status_code == 502
    issue = resp.get_json()["issue"][0]
    assert issue["code"] == "transient"
    assert "MedicationRequest/no-such-order" in issue["diagnostics"]
    assert "HTTP 404" in issue["diagnostics"]


def test_patient_not_on_the_server_is_502_naming_the_patient(client: FlaskClient,
                                                             sekmet: Sekmet) -> None:
    oid = f"o-{uuid.uuid4().hex[:10]}"
    sekmet.put(order(dosage(10), id=oid, subject={"reference": "Patient/ghost"}))
    resp = check(client, oid)
    assert resp.status_code == 502
    assert "Patient/ghost" in resp.get_json()["issue"][0]["diagnostics"]


def test_fhir_server_down_is_502(tmp_path: Path) -> None:
    app = make_app(tmp_path, f"http://127.0.0.1:{free_port()}/fhir", None)
    resp = check(app.test_client(), "o1")
    assert resp.status_code == 502
    assert "could not be reached" in resp.get_json()["issue"][0]["diagnostics"]


def test_no_fhir_server_configured_is_422(tmp_path: Path) -> None:
    app = make_app(tmp_path, "", None)
    resp = check(app.test_client(), "o1")
    assert resp.status_code == 422
    assert "FHIR_SERVER_URL" in resp.get_json()["issue"][0]["diagnostics"]


# --- a stub server for what sekmet does not do -----------------------------------------------

@pytest.fixture
def stub() -> Iterator[StubServer]:
    with stub_server() as s:
        s.json("/fhir/MedicationRequest/o1", order(dosage(40), id="o1"))
        s.json("/fhir/Patient/pat-1", patient())
        yield s


def test_slow_order_read_is_504(tmp_path: Path, stub: StubServer) -> None:
    def slow(h: BaseHTTPRequestHandler) -> None:
        stub.release.wait(30)

    stub.routes["/fhir/MedicationRequest/o1"] = slow
    app = make_app(tmp_path, stub.base + "/fhir", None, timeout=1)
    resp = check(app.test_client(), "o1")
    assert resp.status_code == 504
    assert resp.get_json()["issue"][0]["code"] == "timeout"


def test_failed_context_reads_become_context_unavailable(tmp_path: Path,
                                                         stub: StubServer) -> None:
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    for rtype in ("Condition", "Procedure", "MedicationStatement", "MedicationDispense"):
        stub.json(f"/fhir/{rtype}", empty)
    stub.json("/fhir/MedicationRequest", None, status=500, raw=b"{}")
    # Observation searches are not answered at all (404 from the stub)
    app = make_app(tmp_path, stub.base + "/fhir", "server-token")
    resp = check(app.test_client(), "o1")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    result = resp.get_json()
    validate(result)
    issue = by_rule(result, "context.unavailable")
    assert issue["severity"] == "low"
    assert "coding" not in issue["code"]
    for text in ("eGFR results", "body weight", "medication orders",
                 "the kidney-function dose checks", "the interaction, duplicate-order"):
        assert text in issue["detail"]
    assert "conditions" not in issue["detail"].split("could not run")[0]
    assert by_rule(result, "oral.max-daily")["severity"] == "high"
    assert all(h[2].get("Authorization") == "Bearer server-token" for h in stub.hits)


def test_conditional_create_where_the_server_refuses_client_ids(tmp_path: Path,
                                                                stub: StubServer) -> None:
    for rtype in ("Observation", "Condition", "Procedure", "MedicationRequest",
                  "MedicationStatement", "MedicationDispense"):
        stub.json(f"/fhir/{rtype}", {"resourceType": "Bundle", "type": "searchset"})
    sent: list[dict[str, Any]] = []

    def transaction(h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        sent.append(body)
        if any(e["request"]["method"] == "PUT" for e in body["entry"]):
            status, answer = 405, {"resourceType": "OperationOutcome", "issue": []}
        else:
            status, answer = 200, {"resourceType": "Bundle", "type": "transaction-response",
                                   "entry": [{"response": {
                                       "status": "201 Created",
                                       "location": f"DetectedIssue/srv-{n}/_history/1"}}
                                       for n, _ in enumerate(body["entry"])]}
        data = json.dumps(answer).encode()
        h.send_response(status)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    stub.routes["/fhir"] = transaction
    app = make_app(tmp_path, stub.base + "/fhir", None)
    resp = check(app.test_client(), "o1", persist=True)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    result = resp.get_json()
    validate(result)
    assert sorted(di["id"] for di in issues(result)) == [
        f"srv-{n}" for n in range(len(issues(result)))]
    assert len(sent) == 2
    conditional = sent[1]["entry"][0]["request"]
    assert conditional["method"] == "POST"
    assert conditional["ifNoneExist"].startswith("identifier=urn:baclofen-check:finding|")


def test_a_refused_write_back_is_502_and_nothing_is_recorded(tmp_path: Path,
                                                             stub: StubServer) -> None:
    for rtype in ("Observation", "Condition", "Procedure", "MedicationRequest",
                  "MedicationStatement", "MedicationDispense"):
        stub.json(f"/fhir/{rtype}", {"resourceType": "Bundle", "type": "searchset"})
    stub.json("/fhir", None, status=500, raw=b'{"resourceType":"OperationOutcome"}')
    app = make_app(tmp_path, stub.base + "/fhir", None)
    resp = check(app.test_client(), "o1", persist=True)
    assert resp.status_code == 502
    assert "could not be written" in resp.get_json()["issue"][0]["diagnostics"]
    assert get_store(app).persisted_for_order("MedicationRequest/o1") == []


def test_labs_on_the_server_are_read_for_the_kidney_checks(client: FlaskClient,
                                                            sekmet: Sekmet) -> None:
    today = datetime.now(UTC).date()
    tag = uuid.uuid4().hex[:10]
    pid, oid = f"p-{tag}", f"o-{tag}"
    sekmet.put(patient(id=pid, birth_date=f"{today.year - 71}-01-01"))
    for res in (creatinine(1.5, id=f"cr-{tag}", when=str(today - timedelta(days=5))),
                weight(70, id=f"w-{tag}", when=str(today - timedelta(days=20)))):
        res["subject"] = {"reference": f"Patient/{pid}"}
        sekmet.put(res)
    sekmet.put(order(dosage(15), id=oid, status="draft", subject={"reference": f"Patient/{pid}"},
                     authoredOn=f"{today}T08:00:00Z"))
    resp = check(client, oid)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    result = resp.get_json()
    validate(result)
    di = by_rule(result, "renal.dose-band")
    # (140 - 71) x 70 / (72 x 1.5) = 44.7 mL/min: moderate band, cap 40 mg/day, 45 ordered
    assert di["severity"] == "high"
    assert di["detail"].startswith("CrCl 44.7 mL/min")
    assert "Ordered 45 mg/day" in di["detail"]
    refs = [d["reference"] for e in di["evidence"] for d in e["detail"]]
    assert refs == [f"Observation/cr-{tag}", f"Observation/w-{tag}"]


def test_parameters_without_patient_get_it_from_the_server(client: FlaskClient,
                                                           sekmet: Sekmet) -> None:
    pid, _oid = load_case(sekmet)
    body = parameters(order(dosage(40), id="local-1", subject={"reference": f"Patient/{pid}"}))
    body["parameter"] = [p for p in body["parameter"] if p["name"] != "patient"]
    resp = client.post("/MedicationRequest/$check", json=body,
                       headers={**AUTH, "Content-Type": "application/fhir+json"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    result = resp.get_json()
    validate(result)
    assert by_rule(result, "oral.max-daily")["patient"] == {"reference": f"Patient/{pid}"}
    body["parameter"][0]["resource"]["subject"] = {"reference": "Patient/nobody-here"}
    resp = client.post("/MedicationRequest/$check", json=body,
                       headers={**AUTH, "Content-Type": "application/fhir+json"})
    assert resp.status_code == 502
    assert "Patient/nobody-here" in resp.get_json()["issue"][0]["diagnostics"]
