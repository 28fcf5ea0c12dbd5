"""The service fetches the prefetch keys a client omitted: from an allow-listed fhirServer only,
with the client's token (none when absent), in parallel, following next links, within one
deadline. A real HTTP server on loopback plays the EHR's FHIR server (no mocks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.cds.discovery import prefetch_templates
from service.knowledge import load
from tests.support import builders as b
from tests.support.cdsclient import cards, hook_call, post, rules_in, searchset, topic
from tests.support.context_builders import creatinine, weight
from tests.support.httpstub import StubServer, stub_server

TOKEN = "ehr-access-token-123"


@pytest.fixture
def ehr() -> Iterator[StubServer]:
    """An EHR FHIR server: the patient, observations over two pages, empty other searches."""
    with stub_server() as stub:
        base = f"{stub.base}/fhir"
        stub.json("/fhir/Patient/pat-1", b.patient(birth_date="1940-03-01", gender="female"))
        page1 = searchset(weight(60, "2026-11-20", id="wt-1"))
        page1["link"] = [{"relation": "next", "url": f"{base}/Observation-page2?cursor=2"}]
        stub.json("/fhir/Observation", page1)
        stub.json("/fhir/Observation-page2",
                  searchset(creatinine(2.5, when="2026-11-20T08:00:00Z", id="cr-1")))
        for rtype in ("Condition", "Procedure", "MedicationRequest", "MedicationStatement",
                      "MedicationDispense"):
            stub.json(f"/fhir/{rtype}", searchset())
        yield stub


def make_app(tmp_path: Path, allow: str, timeout: float = 2) -> Flask:
    return create_app({"CDS_REQUIRE_JWT": False, "FHIR_ALLOWLIST": allow,
                       "OUTBOUND_TIMEOUT_S": timeout,
                       "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "TESTING": True})


def call(stub: StubServer, with_token: bool = True, **kw: Any) -> dict[str, Any]:
    body = hook_call(b.order(b.dosage(20, frequency=3)), empty_prefetch=False, **kw)
    body["fhirServer"] = f"{stub.base}/fhir"
    if with_token:
        body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer",
                                     "expires_in": 300, "scope": "patient/*.read",
                                     "subject": "baclofen-check"}
    return body


def test_omitted_keys_are_fetched_with_the_token(tmp_path: Path, ehr: StubServer) -> None:
    client = make_app(tmp_path, f"{ehr.base}/fhir").test_client()
    got = cards(post(client, call(ehr)))
    # the creatinine on the second page made the renal finding (female, 86 y, 60 kg)
    assert any(topic(c).startswith(("renal.", "geriatric.")) for c in got), rules_in(got)
    assert "context.unavailable" not in rules_in(got)
    paths = [h[1] for h in ehr.hits]
    assert "/fhir/Patient/pat-1" in paths
    assert any(p.startswith("/fhir/Observation-page2") for p in paths)
    assert all(h[2].get("Authorization") == f"Bearer {TOKEN}" for h in ehr.hits)
    # every omitted key was asked for once (one request per key, plus next pages)
    first_pages = [p for p in paths if "page2" not in p]
    assert len(first_pages) == len(prefetch_templates(load()))


def test_no_authorization_header_without_fhir_authorization(tmp_path: Path,
                                                            ehr: StubServer) -> None:
    client = make_app(tmp_path, f"{ehr.base}/fhir").test_client()
    cards(post(client, call(ehr, with_token=False)))
    assert ehr.hits and all("Authorization" not in h[2] for h in ehr.hits)


def test_only_omitted_keys_are_fetched(tmp_path: Path, ehr: StubServer) -> None:
    client = make_app(tmp_path, f"{ehr.base}/fhir").test_client()
    failed = {"resourceType": "OperationOutcome",
              "issue": [{"severity": "error", "code": "timeout"}]}
    keys = list(prefetch_templates(load()))
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    prefetch["patient"] = b.patient()
    prefetch["creatinine"] = failed
    del prefetch["weight"]
    got = cards(post(client, call(ehr, prefetch=prefetch)))
    assert [h[1].split("?")[0] for h in ehr.hits] == ["/fhir/Observation"] + (
        ["/fhir/Observation-page2"] if len(ehr.hits) > 1 else [])
    (gathered,) = [c for c in got if topic(c) == "low-findings"]
    issues = gathered["extension"]["baclofen-check.detectedIssue"]
    unavailable = [di for di in issues if di["identifier"][0]["value"] == "context.unavailable"]
    assert len(unavailable) == 1
    assert "serum creatinine" in unavailable[0]["detail"]


def test_server_not_on_allowlist_is_never_called(tmp_path: Path, ehr: StubServer) -> None:
    client = make_app(tmp_path, "https://fhir.trusted.example/r4").test_client()
    got = cards(post(client, call(ehr)))
    assert ehr.hits == []
    assert "context.unavailable" in rules_in(got)


def test_failed_fetches_become_context_unavailable(tmp_path: Path) -> None:
    with stub_server() as stub:
        stub.json("/fhir/Patient/pat-1", b.patient())
        # every search answers 500
        for rtype in ("Observation", "Condition", "Procedure", "MedicationRequest",
                      "MedicationStatement", "MedicationDispense"):
            stub.json(f"/fhir/{rtype}", {"resourceType": "OperationOutcome"}, status=500)
        client = make_app(tmp_path, f"{stub.base}/fhir").test_client()
        got = cards(post(client, call(stub)))
    assert "oral.max-daily" not in rules_in(got)
    di = next(di for c in got if topic(c) == "low-findings"
              for di in c["extension"]["baclofen-check.detectedIssue"]
              if di["identifier"][0]["value"] == "context.unavailable")
    assert "eGFR results" in di["detail"] and "the patient record" not in di["detail"]


def test_patient_that_cannot_be_read_still_checks_the_dose(tmp_path: Path) -> None:
    with stub_server() as stub:  # nothing on this server: every read is a 404
        client = make_app(tmp_path, f"{stub.base}/fhir").test_client()
        body = hook_call(b.order(b.dosage(40, frequency=3)), empty_prefetch=False)
        body["fhirServer"] = f"{stub.base}/fhir"
        got = cards(post(client, body))
    assert "oral.max-daily" in rules_in(got)
    assert "context.unavailable" in rules_in(got)


def test_prefetch_and_self_fetch_give_the_same_cards(tmp_path: Path, ehr: StubServer,
                                                     client: FlaskClient) -> None:
    fetched = cards(post(make_app(tmp_path, f"{ehr.base}/fhir").test_client(), call(ehr)))
    prefetch = {
        "patient": b.patient(birth_date="1940-03-01", gender="female"),
        "creatinine": searchset(creatinine(2.5, when="2026-11-20T08:00:00Z", id="cr-1")),
        "weight": searchset(weight(60, "2026-11-20", id="wt-1")),
    }
    given = cards(post(client, hook_call(b.order(b.dosage(20, frequency=3)),
                                         prefetch=prefetch)))

    def key(cs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return sorted((topic(c), c["indicator"], c["summary"]) for c in cs
                      if c["indicator"] != "info")

    assert key(fetched) == key(given) and key(given)


# --- a Medication the draft order references --------------------------------------------

def referenced_order(display: str | None = None) -> dict[str, Any]:
    order = b.order(b.dosage(4, unit="tablet", frequency=3))
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": "Medication/med-9"}
    if display:
        order["medicationReference"]["display"] = display
    return order


def test_referenced_medication_is_fetched(tmp_path: Path, ehr: StubServer) -> None:
    ehr.json("/fhir/Medication/med-9", {
        "resourceType": "Medication", "id": "med-9",
        "code": {"coding": [{"system": b.RXNORM, "code": "1292", "display": "baclofen"}],
                 "text": "baclofen 10 MG Oral Tablet"}})
    client = make_app(tmp_path, f"{ehr.base}/fhir").test_client()
    body = hook_call(referenced_order(), patient=b.patient())
    body["fhirServer"] = f"{ehr.base}/fhir"
    got = cards(post(client, body))
    card = next(c for c in got if topic(c) == "oral.max-daily")
    assert "120 mg/day" in card["summary"]
    assert [h[1] for h in ehr.hits] == ["/fhir/Medication/med-9"]


def test_medication_that_cannot_be_had_is_412(client: FlaskClient) -> None:
    resp = post(client, hook_call(referenced_order(), patient=b.patient()))
    assert resp.status_code == 412
    oo = resp.get_json()
    assert oo["resourceType"] == "OperationOutcome"
    assert "Medication/med-9" in oo["issue"][0]["diagnostics"]


def test_medication_reference_with_a_name_is_checked_by_name(client: FlaskClient) -> None:
    order = referenced_order("baclofen 10 MG Oral Tablet")
    got = cards(post(client, hook_call(order, patient=b.patient())))
    assert "oral.max-daily" in rules_in(got)
    assert "context.unavailable" in rules_in(got)


# --- a prefetched search cut to its first page ---------------------------------------------

def _first_page(stub: StubServer) -> dict[str, Any]:
    page = searchset(weight(60, "2026-11-20", id="wt-1"))
    page["link"] = [{"relation": "next", "url": f"{stub.base}/fhir/Observation-page2?p=2"}]
    return page


def test_prefetched_first_page_is_completed_from_the_server(tmp_path: Path,
                                                            ehr: StubServer) -> None:
    client = make_app(tmp_path, f"{ehr.base}/fhir").test_client()
    body = hook_call(b.order(b.dosage(20, frequency=3)),
                     patient=b.patient(birth_date="1940-03-01", gender="female"),
                     prefetch={"creatinine": _first_page(ehr)})
    body["fhirServer"] = f"{ehr.base}/fhir"
    got = cards(post(client, body))
    assert [h[1] for h in ehr.hits] == ["/fhir/Observation-page2?p=2"]
    assert any(topic(c).startswith(("renal.", "geriatric.")) for c in got), rules_in(got)
    assert "context.unavailable" not in rules_in(got)


def test_prefetched_first_page_without_a_server_is_unavailable(ehr: StubServer,
                                                               client: FlaskClient) -> None:
    body = hook_call(b.order(b.dosage(20, frequency=3)), patient=b.patient(),
                     prefetch={"creatinine": _first_page(ehr)})
    got = cards(post(client, body))
    assert ehr.hits == []
    di = next(di for c in got if topic(c) == "low-findings"
              for di in c["extension"]["baclofen-check.detectedIssue"]
              if di["identifier"][0]["value"] == "context.unavailable")
    assert "serum creatinine" in di["detail"]


def test_a_server_that_never_answers_ends_at_the_deadline(tmp_path: Path) -> None:
    """One search hangs: the call still answers, the dose is checked, the key is reported."""
    with stub_server() as stub:
        stub.json("/fhir/Patient/pat-1", b.patient())
        for rtype in ("Condition", "Procedure", "MedicationRequest", "MedicationStatement",
                      "MedicationDispense"):
            stub.json(f"/fhir/{rtype}", searchset())

        def hang(h: Any) -> None:
            stub.release.wait(30)  # answers only when the test is over

        stub.routes["/fhir/Observation"] = hang
        client = make_app(tmp_path, f"{stub.base}/fhir", timeout=2).test_client()
        body = hook_call(b.order(b.dosage(40, frequency=3)), empty_prefetch=False)
        body["fhirServer"] = f"{stub.base}/fhir"
        got = cards(post(client, body))
        stub.release.set()
    assert "oral.max-daily" in rules_in(got)
    di = next(di for c in got if topic(c) == "low-findings"
              for di in c["extension"]["baclofen-check.detectedIssue"]
              if di["identifier"][0]["value"] == "context.unavailable")
    assert "eGFR results" in di["detail"] and "conditions" not in di["detail"]


def test_invalid_patient_from_the_server_is_unavailable_not_400(tmp_path: Path) -> None:
    with stub_server() as stub:
        stub.json("/fhir/Patient/pat-1", {"resourceType": "Patient", "id": "pat-1",
                                          "gender": "robot"})
        client = make_app(tmp_path, f"{stub.base}/fhir").test_client()
        body = hook_call(b.order(b.dosage(40, frequency=3)), empty_prefetch=False)
        for key in prefetch_templates(load()):
            if key != "patient":
                body["prefetch"][key] = None
        body["fhirServer"] = f"{stub.base}/fhir"
        got = cards(post(client, body))
    assert "oral.max-daily" in rules_in(got)
    di = next(di for c in got if topic(c) == "low-findings"
              for di in c["extension"]["baclofen-check.detectedIssue"]
              if di["identifier"][0]["value"] == "context.unavailable")
    assert "the patient record" in di["detail"]


def test_invalid_prefetched_patient_is_400(client: FlaskClient) -> None:
    body = hook_call(b.order(), patient={"resourceType": "Patient", "id": "pat-1",
                                         "gender": "robot"})
    resp = post(client, body)
    assert resp.status_code == 400
    assert "prefetch.patient" in resp.get_json()["issue"][0]["diagnostics"]
