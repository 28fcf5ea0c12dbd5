"""CDS Hooks feedback (stored against the call that produced the card), the audit record of
every call, and CORS for browser clients."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from service import create_app
from service.store import get_store
from tests.support import builders as b
from tests.support.cdsclient import SIGN, cards, hook_call, post, topic
from tests.support.checks import CLOCK_TIME

WHEN = "2026-11-25T10:05:00Z"


def send(client: FlaskClient, *items: dict[str, Any], service: str = SIGN) -> Any:
    return client.post(f"/cds-services/{service}/feedback", json={"feedback": list(items)})


def _cards(client: FlaskClient) -> list[dict[str, Any]]:
    prn = b.order(b.dosage(10, frequency=None, asNeededBoolean=True), id="prn")
    high = b.order(b.dosage(40, frequency=3), id="high")
    preg = {"resourceType": "Observation", "id": "preg-1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "82810-3"}]},
            "subject": {"reference": "Patient/pat-1"},
            "effectiveDateTime": (CLOCK_TIME - timedelta(days=20)).date().isoformat(),
            "valueCodeableConcept": {"coding": [{"system": b.SNOMED, "code": "77386006"}]}}
    body = hook_call(prn, high, patient=b.patient(birth_date="1995-01-01", gender="female"),
                     prefetch={"pregnancy": {"resourceType": "Bundle", "type": "searchset",
                                             "entry": [{"resource": preg}]}})
    return cards(post(client, body))


def test_override_and_accept_are_joined_to_the_call(app: Flask, client: FlaskClient) -> None:
    got = _cards(client)
    critical = next(c for c in got if topic(c) == "oral.max-daily")
    resp = send(client, {
        "card": critical["uuid"], "outcome": "overridden", "outcomeTimestamp": WHEN,
        "overrideReason": {"reason": {"system": "urn:baclofen-check:override-reason",
                                      "code": "specialist-directed"},
                           "userComment": "neurology plan"}})
    assert resp.status_code == 200
    assert resp.get_json() == {"received": 1, "joined": 1}
    report = {r.rule_id: r for r in get_store(app).report()}
    assert report["oral.max-daily"].overridden == 1
    assert report["oral.max-daily"].top_override_reasons == [("specialist-directed", 1)]

    suggestion = critical["suggestions"][0]["uuid"]
    resp = send(client, {"card": critical["uuid"], "outcome": "accepted",
                         "acceptedSuggestions": [{"id": suggestion}], "outcomeTimestamp": WHEN})
    assert resp.get_json() == {"received": 1, "joined": 1}
    assert {r.rule_id: r for r in get_store(app).report()}["oral.max-daily"].accepted == 1


def test_feedback_on_the_gathered_card_counts_for_each_finding(app: Flask,
                                                                client: FlaskClient) -> None:
    got = _cards(client)
    gathered = next(c for c in got if topic(c) == "low-findings")
    rules = [di["identifier"][0]["value"]
             for di in gathered["extension"]["baclofen-check.detectedIssue"]]
    assert len(rules) >= 2
    resp = send(client, {"card": gathered["uuid"], "outcome": "overridden",
                         "outcomeTimestamp": WHEN,
                         "overrideReason": {"reason": {"code": "will-monitor"}}})
    assert resp.get_json()["joined"] == 1
    report = {r.rule_id: r for r in get_store(app).report()}
    for rule in rules:
        assert report[rule].overridden == 1, rule


def test_every_call_is_recorded_with_its_card_uuids(app: Flask, client: FlaskClient) -> None:
    body = hook_call(b.order(b.dosage(40, frequency=3)), patient=b.patient())
    got = cards(post(client, body))
    store = get_store(app)

    with store.engine.connect() as conn:
        row = conn.execute(text("select hook, hook_instance, endpoint, caller, patient_ref "
                                "from checks")).one()
        card_uuids = {r[0] for r in conn.execute(text("select card_uuid from findings"))}
    assert tuple(row) == ("order-sign", body["hookInstance"], "cds-services/baclofen-order-sign",
                          "anonymous", "Patient/pat-1")
    assert card_uuids == {c["uuid"] for c in got if "extension" in c}


def test_unknown_card_is_stored_unjoined(client: FlaskClient) -> None:
    resp = send(client, {"card": str(uuid.uuid4()), "outcome": "overridden",
                         "outcomeTimestamp": WHEN})
    assert resp.status_code == 200
    assert resp.get_json() == {"received": 1, "joined": 0}


GOOD = {"card": "7d3a1d6c-2b7e-4b1a-9b1e-0d6f1c2a3b4c", "outcome": "overridden",
        "outcomeTimestamp": WHEN}
MALFORMED = [
    pytest.param([], "feedback", id="not_an_object"),
    pytest.param({}, "feedback", id="no_feedback_list"),
    pytest.param({"feedback": []}, "feedback", id="empty_list"),
    pytest.param({"feedback": ["x"]}, "feedback[0]", id="item_not_object"),
    pytest.param({"feedback": [{**GOOD, "card": None}]}, "feedback[0].card", id="no_card"),
    pytest.param({"feedback": [{**GOOD, "outcome": "ignored"}]}, "feedback[0].outcome",
                 id="bad_outcome"),
    pytest.param({"feedback": [{**GOOD, "outcomeTimestamp": "yesterday"}]},
                 "feedback[0].outcomeTimestamp", id="bad_time"),
    pytest.param({"feedback": [{**GOOD, "outcomeTimestamp": "2026-11-25"}]},
                 "feedback[0].outcomeTimestamp", id="date_not_instant"),
    pytest.param({"feedback": [{**GOOD, "acceptedSuggestions": "x"}]},
                 "feedback[0].acceptedSuggestions", id="suggestions_not_list"),
    pytest.param({"feedback": [{**GOOD, "outcome": "accepted",
                                "acceptedSuggestions": [{}]}]},
                 "feedback[0].acceptedSuggestions[0].id", id="suggestion_without_id"),
    pytest.param({"feedback": [{**GOOD, "overrideReason": "busy"}]},
                 "feedback[0].overrideReason", id="reason_not_object"),
    pytest.param({"feedback": [{**GOOD, "outcome": "accepted",
                                "overrideReason": {"reason": {"code": "other"}}}]},
                 "feedback[0].overrideReason", id="reason_on_accepted"),
]


@pytest.mark.parametrize(("body", "expression"), MALFORMED)
def test_malformed_feedback_is_400(client: FlaskClient, body: Any, expression: str) -> None:
    resp = client.post(f"/cds-services/{SIGN}/feedback", json=body)
    assert resp.status_code == 400
    oo = resp.get_json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0].get("expression", ["feedback"]) == [expression]


def test_feedback_for_unknown_service_is_404(client: FlaskClient) -> None:
    resp = client.post("/cds-services/nope/feedback", json={"feedback": [GOOD]})
    assert resp.status_code == 404


# --- CORS -----------------------------------------------------------------------------------

ALLOWED = "https://ehr.example.org"


@pytest.fixture
def cors_client(tmp_path: Path) -> FlaskClient:
    app = create_app({"CORS_ORIGINS": f"{ALLOWED},https://other-allowed.example",
                      "CDS_REQUIRE_JWT": False, "API_REQUIRE_AUTH": False,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "TESTING": True})
    return app.test_client()


def preflight(client: FlaskClient, path: str, origin: str) -> Any:
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})


@pytest.mark.parametrize("path", ["/cds-services", f"/cds-services/{SIGN}",
                                  f"/cds-services/{SIGN}/feedback", "/MedicationRequest/$check"],
                         ids=["discovery", "service", "feedback", "fhir_check"])
def test_preflight_from_an_allowed_origin(cors_client: FlaskClient, path: str) -> None:
    resp = preflight(cors_client, path, ALLOWED)
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


@pytest.mark.parametrize("path", ["/cds-services", f"/cds-services/{SIGN}"],
                         ids=["discovery", "service"])
def test_preflight_from_another_origin_gets_no_cors_headers(cors_client: FlaskClient,
                                                            path: str) -> None:
    resp = preflight(cors_client, path, "https://evil.example")
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_simple_request_from_allowed_origin(cors_client: FlaskClient) -> None:
    resp = cors_client.get("/cds-services", headers={"Origin": ALLOWED})
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    other = cors_client.get("/cds-services", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_no_cors_without_configured_origins(client: FlaskClient) -> None:
    resp = preflight(client, "/cds-services", ALLOWED)
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_fixture_feedback_is_accepted_unjoined(client: FlaskClient) -> None:
    body = json.loads((Path(__file__).resolve().parents[2] / "fixtures" /
                       "cds-feedback.json").read_text())
    resp = client.post(f"/cds-services/{SIGN}/feedback", json=body)
    assert resp.status_code == 200
    assert resp.get_json() == {"received": 2, "joined": 0}


def test_preflight_needs_no_jwt(tmp_path: Path) -> None:
    app = create_app({"CORS_ORIGINS": ALLOWED, "CDS_REQUIRE_JWT": True,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "TESTING": True})
    client = app.test_client()
    resp = preflight(client, f"/cds-services/{SIGN}", ALLOWED)
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    # the call itself still needs the JWT, and its 401 carries the CORS header for the browser
    call = client.post(f"/cds-services/{SIGN}", json={}, headers={"Origin": ALLOWED})
    assert call.status_code == 401
    assert call.headers["Access-Control-Allow-Origin"] == ALLOWED
