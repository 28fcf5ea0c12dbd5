"""The watch end to end against the real sekmet FHIR server (its R4 rest-hook Subscriptions):
subscribe, a new lab on the server, the notification, the queue, the re-check, the
DetectedIssue on the server; a missed event found by the catch-up while the errored
Subscription is requested again; ``--remove``.

sekmet runs here with one delivery attempt per notification (``subscriptions.retries: 1``;
its default is three, with waits of 1, 2 and 4 s) so that a Subscription goes to ``error`` in
about a second instead of seven; everything else is its default behaviour (``put-resource``:
``PUT {endpoint}/{type}/{id}`` with the resource)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select

from service import create_app
from service.knowledge import load
from service.store import checks, get_store
from service.watch.subscriptions import TAG_CODE, TAG_SYSTEM, catch_up_due, criteria
from tests.support.builders import dosage, order, patient
from tests.support.context_builders import creatinine, weight
from tests.support.fhir_validate import validate
from tests.support.services import SEKMET_TOKEN, Sekmet, free_port, running_sekmet
from tests.support.watch_world import NOTIFY_TOKEN, Receiver, World, wait_for


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("sekmet-watch")
    port = free_port()
    auth = (f"  types: [bearer]\n  tokens: [{SEKMET_TOKEN}]\n"
            "subscriptions:\n  retries: 1\n")
    with running_sekmet(home, port, auth) as pid:
        sek = Sekmet(f"http://127.0.0.1:{port}/fhir", SEKMET_TOKEN, pid)
        our_port = free_port()
        config = {
            "API_REQUIRE_AUTH": True, "API_TOKENS": "t", "CDS_REQUIRE_JWT": False,
            "DATABASE_URL": f"sqlite:///{home}/audit.sqlite3",
            "FHIR_SERVER_URL": sek.base_url, "FHIR_SERVER_TOKEN": SEKMET_TOKEN,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{our_port}",
            "WATCH_NOTIFY_TOKEN": NOTIFY_TOKEN, "WATCH_CHECK_S": 60, "TESTING": True,
        }
        app = create_app(config)
        receiver = Receiver(app, our_port)
        receiver.start()
        try:
            yield World(sek, app, app.config["SETTINGS"], app.extensions["watch"], receiver)
        finally:
            receiver.stop()


def subscriptions(sek: Sekmet) -> list[dict[str, Any]]:
    bundle = sek.get(f"Subscription?_tag={TAG_SYSTEM}|{TAG_CODE}").json()
    return [e["resource"] for e in bundle.get("entry", [])]


def detected_issue(sek: Sekmet, server_id: str) -> dict[str, Any]:
    resp = sek.get(f"DetectedIssue/{server_id}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def rule_of(issue: dict[str, Any]) -> str:
    return next(i["value"] for i in issue["identifier"]
                if i["system"] == "urn:baclofen-check:rule")


def test_the_watch_end_to_end(world: World) -> None:
    sek, ws = world.sekmet, world.ws
    today = datetime.now(UTC).date()
    tag = uuid.uuid4().hex[:8]
    pid, oid = f"p-{tag}", f"o-{tag}"
    subject = {"reference": f"Patient/{pid}"}

    def lab(value: float, n: int, days_ago: int = 0) -> dict[str, Any]:
        res = creatinine(value, id=f"cr-{tag}-{n}", when=str(today - timedelta(days=days_ago)))
        res["subject"] = subject
        return res

    # a 71-year-old of 70 kg, on baclofen 15 mg three times a day, kidneys fine (CrCl 84)
    sek.put(patient(id=pid, birth_date=f"{today.year - 71}-01-01"))
    w = weight(70, id=f"w-{tag}", when=str(today - timedelta(days=20)))
    w["subject"] = subject
    sek.put(w)
    sek.put(lab(0.8, 1, days_ago=30))
    sek.put(order(dosage(15), id=oid, status="active", subject=subject,
                  authoredOn=f"{today - timedelta(days=60)}T08:00:00Z"))

    # --- subscribe: one Subscription per kind of input, idempotent -------------------------
    first = world.command(watch_command="subscribe", remove=False)
    assert len(first["created"]) == len(criteria(load())) and not first["deleted"]
    subs = wait_for(lambda: (lambda s: s if s and all(x["status"] == "active" for x in s)
                             else None)(subscriptions(sek)), "the Subscriptions to be active")
    assert {s["criteria"] for s in subs} == set(criteria(load()))
    assert any(s["criteria"].startswith("Observation?code=") and "2160-0" in s["criteria"]
               for s in subs)
    assert {"Patient", "Condition", "Procedure", "MedicationStatement",
            "MedicationDispense"} <= {s["criteria"] for s in subs}
    for s in subs:
        assert s["channel"]["endpoint"] == world.settings.public_base_url + "/subscriptions/notify"
        assert s["channel"]["payload"] == "application/fhir+json"
        assert s["channel"]["header"] == [f"Authorization: Bearer {NOTIFY_TOKEN}"]
    again = world.command(watch_command="subscribe", remove=False)
    assert sorted(again["kept"]) == sorted(first["created"]) and not again["created"]
    assert len(subscriptions(sek)) == len(subs)

    # --- a new lab: CrCl 44.7 mL/min, the 45 mg/day now exceeds the 40 mg/day renal cap -----
    sek.put(lab(1.5, 2))
    entry = wait_for(lambda: ws.entries(), "the notification to be queued")
    assert [e["patient_ref"] for e in entry] == [f"Patient/{pid}"]
    assert entry[0]["triggers"][0]["resource"] == f"Observation/cr-{tag}-2/_history/1"
    assert world.worker().drain() == 1
    assert ws.entries() == []
    rechecks = ws.rechecks(f"Patient/{pid}")
    assert [(r["outcome"], r["order_refs"]) for r in rechecks] == [
        ("done", [f"MedicationRequest/{oid}"])]
    found = {f["rule_id"]: f for f in ws.findings(f"Patient/{pid}")}
    renal = found["renal.dose-band"]
    assert (renal["change"], renal["severity"]) == ("new", "high")
    on_server = detected_issue(sek, renal["server_id"])
    validate(on_server)
    assert on_server["status"] == "final"
    assert on_server["implicated"][0] == {"reference": f"MedicationRequest/{oid}"}
    assert "44.7 mL/min" in on_server["detail"]
    with get_store(world.app).engine.connect() as conn:
        audit = conn.execute(select(checks.c.endpoint, checks.c.caller, checks.c.hook,
                                    checks.c.hook_instance, checks.c.patient_ref)).all()
    assert [tuple(a) for a in audit] == [("watch", "watch", "notification",
                                          f"Observation/cr-{tag}-2/_history/1",
                                          f"Patient/{pid}")]

    # a pharmacist records what was done on the server's DetectedIssue
    mitigation = [{"action": {"text": "Dose reviewed with the prescriber"},
                   "date": f"{today}", "author": {"display": "Pharmacist"}}]
    sek.put({**{k: v for k, v in on_server.items() if k != "meta"}, "mitigation": mitigation})

    # --- another event, nothing new: nothing rewritten on the server --------------------------
    w["valueQuantity"]["value"] = 70.2
    sek.put(w)
    wait_for(lambda: ws.entries(), "the weight notification to be queued")
    assert world.worker().drain() == 1
    latest = ws.findings(f"Patient/{pid}")[-len(found):]
    assert {f["change"] for f in latest} == {"unchanged"}
    kept = detected_issue(sek, renal["server_id"])
    assert (kept["meta"]["versionId"], kept["mitigation"]) == ("2", mitigation)

    # --- the receiver is down: sekmet gives up and sets the Subscription to error -------------
    world.receiver.stop()
    # the prescriber lowers the dose to 10 mg three times a day: under the renal cap
    sek.put(order(dosage(10), id=oid, status="active", subject=subject,
                  authoredOn=f"{today - timedelta(days=60)}T08:00:00Z"))
    order_sub = next(s for s in subs if s["criteria"].startswith("MedicationRequest"))
    wait_for(lambda: sek.get(f"Subscription/{order_sub['id']}").json()["status"]
             == "error", "the Subscription to go to error")
    world.receiver.start()
    assert ws.entries() == []        # the event was lost on the way

    # the periodic check requests it again and the catch-up finds the missed lab
    world.worker().periodic(force=True)
    assert sek.get(f"Subscription/{order_sub['id']}").json()["status"] == "active"
    missed = ws.entries()
    assert [e["patient_ref"] for e in missed] == [f"Patient/{pid}"]
    triggers = [(t["kind"], t["resource"]) for t in missed[0]["triggers"]]
    assert ("catch-up", f"MedicationRequest/{oid}/_history/2") in triggers
    # (the first catch-up also looks 10 s before the time of subscribing: what was written then
    # was never notified; nothing a notification brought is among them)
    assert {kind for kind, _ in triggers} == {"catch-up"}
    assert f"Observation/cr-{tag}-2/_history/1" not in {ref for _, ref in triggers}
    assert world.worker().drain() == 1
    cancelled = [f for f in ws.findings(f"Patient/{pid}") if f["change"] == "cancelled"]
    assert [f["server_id"] for f in cancelled] == [renal["server_id"]]
    assert cancelled[0]["rule_id"] == "renal.dose-band"
    gone = detected_issue(sek, renal["server_id"])
    assert (gone["status"], gone["mitigation"]) == ("cancelled", mitigation)
    # a catch-up finds nothing that a notification or an earlier catch-up brought
    world.worker().periodic(force=True)
    assert ws.entries() == []

    # the Subscription delivers again
    sek.put(lab(0.9, 4))
    wait_for(lambda: ws.entries(), "a notification after the Subscription was re-requested")
    assert ws.entries()[0]["triggers"][0]["kind"] == "notification"
    world.worker().drain()

    # --- a ping asks for a catch-up; catch-up --since by hand ---------------------------------

    assert not catch_up_due(ws, datetime.now(UTC))
    resp = requests.post(world.settings.public_base_url + "/subscriptions/notify",
                         headers={"Authorization": f"Bearer {NOTIFY_TOKEN}"}, timeout=5)
    assert resp.status_code == 200
    assert catch_up_due(ws, datetime.now(UTC))
    # `watch work --once`: the catch-up it asked for finds nothing new, nothing to re-check
    done = world.command(watch_command="work", once=True, threads=1, metrics_port=None)
    assert done == {"rechecked": 0, "queue": {"pending": 0, "running": 0, "failed": 0}}
    assert not catch_up_due(ws, datetime.now(UTC))
    # by hand from an hour ago: the current versions of the patient, the weight, three labs
    # and the order; all but those written before subscribing were brought by a notification,
    # and those too when the first catch-up's look-back reached them
    manual = world.command(watch_command="catch-up",
                           since=(datetime.now(UTC) - timedelta(hours=1)).isoformat())
    before_subscribing = {f"Patient/{pid}/_history/1", f"Observation/cr-{tag}-1/_history/1",
                          f"Observation/w-{tag}/_history/1"}
    unseen = before_subscribing - {ref for _, ref in triggers}
    assert manual["changed"] == 6
    assert manual["queued"] == ([f"Patient/{pid}"] if unseen - {
        f"Observation/w-{tag}/_history/1"} else [])

    # --- remove ---------------------------------------------------------------------------------
    gone = world.command(watch_command="subscribe", remove=True)
    assert sorted(gone["deleted"]) == sorted(first["created"])
    assert subscriptions(sek) == []


def test_readyz_reports_the_worker(world: World) -> None:
    client = world.app.test_client()
    world.worker().heartbeat(force=True)
    body = client.get("/readyz").get_json()
    assert body["watch"]["worker"] == "ok"
    assert body["watch"]["queue"] == {"pending": 0, "running": 0, "failed": 0}
