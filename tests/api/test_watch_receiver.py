"""The notification receiver (service/watch/receiver.py): the token, every payload form, the
patient taken out of the resource, the queue written, and clear 4xx for bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from service import create_app
from service.config import ConfigError
from service.knowledge import load
from service.store import get_store
from service.watch.queue import WatchStore
from service.watch.receiver import CATCH_UP_REQUESTED
from service.watch.worker import Worker

NOTIFY_TOKEN = "notify-token-0123456789abcdef"
HOOK = {"Authorization": f"Bearer {NOTIFY_TOKEN}"}
FHIR = "application/fhir+json"


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app({
        "API_REQUIRE_AUTH": True, "API_TOKENS": "t", "CDS_REQUIRE_JWT": False,
        "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
        "WATCH_NOTIFY_TOKEN": NOTIFY_TOKEN, "TESTING": True,
        # nothing listens there: the receiver must never need the FHIR server
        "FHIR_SERVER_URL": "http://127.0.0.1:9/fhir", "FHIR_SERVER_TOKEN": "x",
    })


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def ws(app: Flask) -> WatchStore:
    store: WatchStore = app.extensions["watch"]
    return store


def lab(oid: str, pid: str, version: str = "1") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "meta": {"versionId": version, "lastUpdated": "2026-12-01T09:00:00.000Z"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
            "subject": {"reference": f"Patient/{pid}"}}


def queued(app: Flask) -> list[tuple[str, int]]:
    return [(e["patient_ref"], e["events"]) for e in ws(app).entries()]


def outbound_calls() -> float:
    return sum(s.value for m in REGISTRY.collect()
               if m.name == "baclofen_check_outbound_fhir_calls" for s in m.samples
               if s.name.endswith("_total"))


def test_put_of_the_changed_resource_queues_its_patient(app: Flask, client: FlaskClient) -> None:
    calls = outbound_calls()
    resp = client.put("/subscriptions/notify/Observation/cr-1", json=lab("cr-1", "p1"),
                      headers={**HOOK, "Content-Type": f"{FHIR}; charset=utf-8"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    # a second event for the same waiting patient merges into its entry
    client.put("/subscriptions/notify/Observation/cr-2", json=lab("cr-2", "p1"), headers=HOOK)
    assert queued(app) == [("Patient/p1", 2)]
    triggers = ws(app).entries()[0]["triggers"]
    assert [t["resource"] for t in triggers] == ["Observation/cr-1/_history/1",
                                                 "Observation/cr-2/_history/1"]
    assert triggers[0]["kind"] == "notification"
    assert outbound_calls() == calls


def test_post_forms_resource_bundle_and_ping(app: Flask, client: FlaskClient) -> None:
    assert client.post("/subscriptions/notify", json=lab("cr-1", "p1"),
                       headers=HOOK).status_code == 200
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": {"resourceType": "Parameters", "parameter": [
            {"name": "type", "valueCode": "event-notification"}]}},
        {"resource": {"resourceType": "MedicationRequest", "id": "m1", "status": "active",
                      "intent": "order", "subject": {"reference": "http://x/fhir/Patient/p2"},
                      "medicationCodeableConcept": {"text": "baclofen"}}},
        {"resource": {"resourceType": "Patient", "id": "p3"}},
        {"resource": {"resourceType": "Medication", "id": "med-1"}},   # names no patient
    ]}
    assert client.post("/subscriptions/notify", json=bundle, headers=HOOK).status_code == 200
    assert sorted(queued(app)) == [("Patient/p1", 1), ("Patient/p2", 1), ("Patient/p3", 1)]
    # an empty ping names no patient: it asks the worker for a catch-up
    assert ws(app).get(CATCH_UP_REQUESTED)[1] is None
    ping = client.post("/subscriptions/notify", headers=HOOK)
    assert ping.status_code == 200
    assert "catch-up" in ping.get_json()["issue"][0]["diagnostics"]
    assert ws(app).get(CATCH_UP_REQUESTED)[1] is not None
    # a handshake or heartbeat of a topic-based server is answered and changes nothing
    beat = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
        "resourceType": "Parameters", "parameter": [{"name": "type", "valueCode": "heartbeat"}]}}]}
    assert client.post("/subscriptions/notify", json=beat, headers=HOOK).status_code == 200
    assert len(queued(app)) == 3


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-token-0123456789abc"},
    {"Authorization": f"Basic {NOTIFY_TOKEN}"},
    {"Authorization": f"Bearer {NOTIFY_TOKEN}x"}])
def test_anything_but_the_notify_token_is_401(app: Flask, client: FlaskClient,
                                              headers: dict[str, str]) -> None:
    resp = client.put("/subscriptions/notify/Observation/cr-1", json=lab("cr-1", "p1"),
                      headers=headers)
    assert resp.status_code == 401
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert queued(app) == []


@pytest.mark.parametrize(("path", "body", "content_type", "status"), [
    ("/subscriptions/notify", b"{not json", FHIR, 400),
    ("/subscriptions/notify", b"[1, 2]", FHIR, 400),
    ("/subscriptions/notify", b'{"resourceType": "Observation"}', "text/plain", 415),
    ("/subscriptions/notify/Observation/cr-1", b'{"resourceType": "Observation", "id": "x"}',
     FHIR, 400),
    ("/subscriptions/notify/not-a-type/cr-1", b'{"resourceType": "Observation", "id": "cr-1"}',
     FHIR, 400),
])
def test_bad_notifications_are_a_clear_4xx(app: Flask, client: FlaskClient, path: str,
                                           body: bytes, content_type: str, status: int) -> None:
    method = client.put if path.count("/") > 2 else client.post
    resp = method(path, data=body, headers={**HOOK, "Content-Type": content_type})
    assert resp.status_code == status
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert queued(app) == []


def test_receiver_is_off_without_a_token(tmp_path: Path) -> None:
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3", "TESTING": True})
    resp = app.test_client().post("/subscriptions/notify", headers=HOOK)
    assert resp.status_code == 404
    assert "watch" not in app.extensions


def test_a_short_notify_token_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WATCH_NOTIFY_TOKEN"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3",
                    "WATCH_NOTIFY_TOKEN": "short"})


def test_notifications_are_counted_by_kind(client: FlaskClient) -> None:
    def count(kind: str) -> float:
        for line in client.get("/metrics").get_data(as_text=True).splitlines():
            if line.startswith(f'baclofen_check_watch_notifications_total{{kind="{kind}"}}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count("resource"), count("refused")
    client.put("/subscriptions/notify/Observation/cr-1", json=lab("cr-1", "p1"), headers=HOOK)
    client.put("/subscriptions/notify/Observation/cr-1", json=lab("cr-1", "p1"))
    assert (count("resource"), count("refused")) == (before[0] + 1, before[1] + 1)


def test_a_recheck_that_fails_unexpectedly_goes_back_on_the_queue(app: Flask,
                                                                   client: FlaskClient) -> None:
    def broken() -> Any:
        raise RuntimeError("a bug, not a server failure")

    client.put("/subscriptions/notify/Observation/cr-1", json=lab("cr-1", "p1"), headers=HOOK)
    worker = Worker(app.config["SETTINGS"], get_store(app), ws(app), load(), client=broken)
    assert worker.drain() == 1
    [entry] = ws(app).entries()
    assert (entry["state"], entry["attempts"], entry["last_error"]) == (
        "pending", 1, "RuntimeError")
    assert ws(app).claim("w", datetime.now(UTC)) is None   # it waits out its backoff
