"""Topic-based notifications (Subscriptions Backport IG on R4; service/watch/topics.py):
against the real sekmet FHIR server, which keeps its topics as ``Basic`` resources and has
none for Observations or MedicationRequests, so the test adds one: ``watch subscribe
--topics`` registers backport Subscriptions, the receiver answers the handshake and the
heartbeats, a ``full-resource`` and an ``id-only`` notification each lead to the re-check (the
worker reads the id-only focus from the server). And the signed form: a notification signed
with ``X-Hub-Signature`` (WATCH_NOTIFY_HMAC_SECRET) carrying an R4B ``SubscriptionStatus``,
accepted instead of the bearer token."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service import create_app
from service.watch import metrics
from service.watch.queue import WatchStore
from tests.support.services import Sekmet
from tests.support.watch_world import Record, World, wait_for, watch_world

NOTIFY_TOKEN = "topic-notify-" + uuid.uuid4().hex
ST = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic"
TOPIC_URL = "http://example.org/fhir/SubscriptionTopic/baclofen-inputs"
SECRET = "hmac-secret-" + uuid.uuid4().hex


def topic() -> dict[str, Any]:
    """A topic as sekmet stores its own (R5 cross-version extensions on Basic): new or changed
    Observations and MedicationRequests, Observations filterable by code."""
    def trigger(rtype: str) -> dict[str, Any]:
        return {"url": f"{ST}.resourceTrigger", "extension": [
            {"url": "description", "valueMarkdown": f"A {rtype} was created or updated"},
            {"url": "resource", "valueUri": f"http://hl7.org/fhir/StructureDefinition/{rtype}"},
            {"url": "supportedInteraction", "valueCode": "create"},
            {"url": "supportedInteraction", "valueCode": "update"},
            {"url": "fhirPathCriteria", "valueString": "true"}]}
    return {
        "resourceType": "Basic", "id": "topic-baclofen-inputs",
        "modifierExtension": [{"url": f"{ST}.status", "valueCode": "active"}],
        "extension": [
            {"url": f"{ST}.url", "valueUri": TOPIC_URL},
            {"url": f"{ST}.title", "valueString": "Renal results and medication orders"},
            trigger("Observation"), trigger("MedicationRequest"),
            {"url": f"{ST}.canFilterBy", "extension": [
                {"url": "description", "valueMarkdown": "Filter on code"},
                {"url": "resource", "valueUri": "Observation"},
                {"url": "filterParameter", "valueString": "code"}]}],
        "code": {"coding": [{"system": "http://hl7.org/fhir/fhir-types",
                             "code": "SubscriptionTopic"}]},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # a heartbeat every second (the backport heartbeat period is WATCH_CHECK_S)
    with watch_world(tmp_path_factory.mktemp("sekmet-topics"), NOTIFY_TOKEN,
                     WATCH_CHECK_S=1) as world:
        yield world


def topic_subscriptions(sek: Sekmet) -> list[dict[str, Any]]:
    bundle = sek.get("Subscription?_tag=urn:baclofen-check:watch|topic-subscription").json()
    return [e["resource"] for e in bundle.get("entry", [])]


def counted(kind: str) -> float:
    value: float = metrics.NOTIFICATIONS.labels(kind)._value.get()
    return value


def test_topic_based_full_resource_and_id_only(world: World) -> None:
    sek, ws = world.sekmet, world.ws
    rec = Record(sek)
    pid, lab = rec.pid, rec.lab

    sek.put(topic())
    rec.seed()
    handshakes = counted("handshake")

    made = world.command(watch_command="subscribe", remove=False, topics=True,
                         content="full-resource")
    # our topic (Observations, MedicationRequests) and sekmet's own patient-change topic
    assert len(made["created"]) == 2 and not made["deleted"]
    subs = wait_for(lambda: (lambda s: s if len(s) == 2 and all(
        x["status"] == "active" for x in s) else None)(topic_subscriptions(sek)),
        "the handshakes to be answered and the Subscriptions active")
    assert counted("handshake") >= handshakes + 2
    ours = next(s for s in subs if s["criteria"] == TOPIC_URL)
    [flt] = ours["_criteria"]["extension"]
    assert flt["valueString"].startswith("Observation?code=") and "2160-0" in flt["valueString"]
    assert ours["channel"]["_payload"]["extension"][0]["valueCode"] == "full-resource"
    assert {s["criteria"] for s in subs} == {TOPIC_URL,
                                             "http://sekmet.dev/fhir/SubscriptionTopic/patient-change"}
    again = world.command(watch_command="subscribe", remove=False, topics=True,
                          content="full-resource")
    assert sorted(again["kept"]) == sorted(made["created"])

    # heartbeats arrive and are answered
    beats = counted("heartbeat")
    wait_for(lambda: counted("heartbeat") > beats, "a heartbeat", seconds=10)

    # --- full-resource: the lab travels in the notification -------------------------------
    lab(1.5, 2)
    queued = wait_for(lambda: ws.entries(), "the full-resource notification")
    assert queued[0]["patient_ref"] == f"Patient/{pid}"
    assert queued[0]["triggers"][0]["resource"] == f"Observation/cr-{rec.tag}-2/_history/1"
    assert world.worker().drain() == 1
    found = {f["rule_id"]: f for f in ws.findings(f"Patient/{pid}")}
    assert (found["renal.dose-band"]["change"], found["renal.dose-band"]["severity"]) == (
        "new", "high")

    # --- id-only: the notification names the focus; the worker reads it from the server ----
    updated = world.command(watch_command="subscribe", remove=False, topics=True,
                            content="id-only")
    assert sorted(updated["updated"]) == sorted(made["created"])
    wait_for(lambda: all(s["status"] == "active" and s["channel"]["_payload"]["extension"][0]
                         ["valueCode"] == "id-only" for s in topic_subscriptions(sek)),
             "the id-only Subscriptions to be active")
    lab(0.8, 3)
    focus = f"focus:Observation/cr-{rec.tag}-3"
    wait_for(lambda: ws.get(focus)[1] is not None, "the id-only notification's focus")
    assert ws.entries() == []            # the receiver did not read the server
    assert world.worker().drain() == 1   # the worker did, and re-checked the patient
    assert ws.get(focus)[1] is None
    last = ws.rechecks(f"Patient/{pid}")[-1]
    assert last["triggers"][0]["resource"] == f"Observation/cr-{rec.tag}-3/_history/1"
    assert last["triggers"][0]["kind"] == "notification"
    cancelled = [f for f in ws.findings(f"Patient/{pid}") if f["change"] == "cancelled"]
    assert [f["rule_id"] for f in cancelled] == ["renal.dose-band"]

    gone = world.command(watch_command="subscribe", remove=True, topics=True,
                         content="full-resource")
    assert sorted(gone["deleted"]) == sorted(made["created"])
    assert topic_subscriptions(sek) == []


# --- signed notifications -----------------------------------------------------------------

@pytest.fixture
def signed_app(tmp_path: Path) -> Flask:
    """A receiver that takes signed notifications only (no bearer token configured)."""
    return create_app({
        "API_REQUIRE_AUTH": True, "API_TOKENS": "t", "CDS_REQUIRE_JWT": False,
        "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
        "WATCH_NOTIFY_HMAC_SECRET": SECRET, "TESTING": True,
    })


def r4b_notification(pid: str) -> bytes:
    """An event notification as an R4B server sends it: a SubscriptionStatus first, then the
    changed resource (full-resource)."""
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [
        {"fullUrl": "urn:uuid:0b9c1a4e-5d2f-4f7e-9d0e-2f9a0c3b4d51", "resource": {
            "resourceType": "SubscriptionStatus", "status": "active",
            "type": "event-notification", "eventsSinceSubscriptionStart": "7",
            "notificationEvent": [{"eventNumber": "7", "focus": {
                "reference": "https://ehr.example.org/fhir/r4/Observation/cr-77"}}],
            "subscription": {"reference": "https://ehr.example.org/fhir/r4/Subscription/s1"},
            "topic": "https://ehr.example.org/fhir/SubscriptionTopic/lab-result"}},
        {"fullUrl": "https://ehr.example.org/fhir/r4/Observation/cr-77", "resource": {
            "resourceType": "Observation", "id": "cr-77", "status": "final",
            "meta": {"versionId": "3", "lastUpdated": "2026-12-01T09:00:00Z"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
            "subject": {"reference": f"Patient/{pid}"}}}]}
    return json.dumps(bundle).encode()


def sign(body: bytes, secret: str = SECRET, method: str = "sha256") -> str:
    return f"{method}=" + hmac.new(secret.encode(), body, getattr(hashlib, method)).hexdigest()


@pytest.mark.parametrize("method", ["sha256", "sha1", "sha512"])
def test_a_signed_notification_is_accepted_instead_of_the_token(signed_app: Flask,
                                                               method: str) -> None:
    client = signed_app.test_client()
    body = r4b_notification("a1")
    resp = client.post("/subscriptions/notify", data=body, headers={
        "Content-Type": "application/fhir+json", "X-Hub-Signature": sign(body, method=method)})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    ws: WatchStore = signed_app.extensions["watch"]
    [entry] = ws.entries()
    assert entry["patient_ref"] == "Patient/a1"
    assert entry["triggers"][0]["resource"] == "Observation/cr-77/_history/3"


@pytest.mark.parametrize("headers", [
    {},                                                           # neither
    {"Authorization": "Bearer anything-0123456789abcdef"},        # no token is configured
    {"X-Hub-Signature": "sha256=" + "0" * 64},                    # wrong signature
    {"X-Hub-Signature": "md5=abc"},                               # unknown method
    {"X-Hub-Signature": sign(b"another body")},                   # signed something else
    {"X-Hub-Signature": sign(r4b_notification("a1"), secret="another-secret-0123456789")},
])
def test_an_unsigned_or_badly_signed_notification_is_401(signed_app: Flask,
                                                         headers: dict[str, str]) -> None:
    resp = signed_app.test_client().post("/subscriptions/notify", data=r4b_notification("a1"),
                                         headers={"Content-Type": "application/fhir+json",
                                                  **headers})
    assert resp.status_code == 401
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    ws: WatchStore = signed_app.extensions["watch"]
    assert ws.entries() == []


def test_signed_id_only_keeps_the_focus_for_the_worker(signed_app: Flask) -> None:
    bundle = json.loads(r4b_notification("a1"))
    del bundle["entry"][1]                                    # id-only: no resource
    body = json.dumps(bundle).encode()
    resp = signed_app.test_client().post("/subscriptions/notify", data=body, headers={
        "Content-Type": "application/fhir+json", "X-Hub-Signature": sign(body)})
    assert resp.status_code == 200
    ws: WatchStore = signed_app.extensions["watch"]
    assert ws.entries() == []
    assert ws.get("focus:Observation/cr-77")[1] is not None
