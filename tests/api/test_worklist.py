"""The pharmacist worklist (service/watch/worklist.py, service/web/worklist.py) over the
watch's results table: re-check results are recorded the way the worker records them
(``WatchStore.record_result``), and the list, its filters and paging, resolve (404, 400, 409,
the audit row), cancellation and the return of a finding with new numbers are checked through
the HTTP endpoints. The FHIR server side (mitigation, Tasks) is
tests/integration/test_worklist_sekmet.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from service import create_app
from service.store import get_store
from service.watch.queue import Entry, FindingChange, WatchStore
from service.watch.worklist import worklist_resolutions

READ = {"Authorization": "Bearer reader"}
WRITE = {"Authorization": "Bearer pharmacist"}


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    app = create_app({
        "API_REQUIRE_AUTH": True, "API_TOKENS": "reader,pharmacist:write",
        "CDS_REQUIRE_JWT": False, "DATABASE_URL": db_url,
        "WATCH_NOTIFY_TOKEN": "notify-token-0123456789abcdef", "TESTING": True,
    })
    yield app
    get_store(app).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def issue(fid: str, rule: str, severity: str, detail: str, patient: str) -> dict[str, Any]:
    return {"resourceType": "DetectedIssue", "id": f"bc-{fid}", "status": "final",
            "identifier": [{"system": "urn:baclofen-check:rule", "value": rule},
                           {"system": "urn:baclofen-check:finding", "value": fid}],
            "code": {"text": f"title of {rule}"}, "severity": severity,
            "patient": {"reference": patient}, "detail": detail}


def recheck(app: Flask, patient: str, at: datetime, found: list[tuple[str, str, str, str, str]],
            orders: list[str] | None = None, trigger: str = "Observation/cr-1/_history/1",
            ) -> None:
    """Record one re-check result as the worker does: ``found`` holds (order, finding id, rule,
    severity, change) and the detail is '<rule> at <at>' unless the finding id names one after
    a '|'."""
    ws: WatchStore = app.extensions["watch"]
    entry = Entry(0, patient, 1, 1, at - timedelta(seconds=2), [
        {"kind": "notification", "resource": trigger, "received": at.isoformat(),
         "lastUpdated": (at - timedelta(seconds=3)).isoformat()}])
    changes = []
    for order, fid_detail, rule, severity, change in found:
        fid, _, detail = fid_detail.partition("|")
        changes.append(FindingChange(
            order, fid, rule, severity, change, f"bc-{fid}",
            None if change == "cancelled" else issue(fid, rule, severity,
                                                     detail or f"{rule} numbers", patient)))
    ws.record_result(entry, "test", at, orders if orders is not None else
                     sorted({c.order_ref for c in changes}), changes)


NOW = datetime.now(UTC)


def seeded(app: Flask) -> None:
    recheck(app, "Patient/a", NOW - timedelta(hours=50), [
        ("MedicationRequest/a1", "f-a-renal", "renal.dose-band", "high", "new"),
        ("MedicationRequest/a1", "f-a-low", "order.no-end", "low", "new")])
    recheck(app, "Patient/b", NOW - timedelta(hours=5), [
        ("MedicationRequest/b1", "f-b-cns", "interaction.cns-depressant", "moderate", "new")])
    recheck(app, "Patient/c", NOW - timedelta(hours=1), [
        ("MedicationRequest/c1", "f-c-max", "oral.max-daily", "high", "new")])


def ids(resp: Any) -> list[str]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return [e["finding"] for e in resp.get_json()["entries"]]


def test_ranked_highest_severity_then_oldest_with_filters_and_paging(
        app: Flask, client: FlaskClient) -> None:
    seeded(app)
    resp = client.get("/worklist.json", headers=READ)
    body = resp.get_json()
    assert ids(resp) == ["f-a-renal", "f-c-max", "f-b-cns"] and body["total"] == 3
    first = body["entries"][0]
    assert first["patient"] == "Patient/a" and first["order"] == "MedicationRequest/a1"
    assert (first["rule"], first["severity"], first["summary"]) == (
        "renal.dose-band", "high", "renal.dose-band numbers")
    assert first["detectedIssue"] == "DetectedIssue/bc-f-a-renal" and first["task"] is None
    assert first["trigger"]["resource"] == "Observation/cr-1"
    assert first["trigger"]["version"] == "1"
    assert datetime.fromisoformat(first["since"]) == NOW - timedelta(hours=50)
    # low findings only behind the filter
    assert ids(client.get("/worklist.json?severity=low", headers=READ)) == ["f-a-low"]
    assert len(ids(client.get("/worklist.json?severity=all", headers=READ))) == 4
    assert ids(client.get("/worklist.json?rule=renal", headers=READ)) == ["f-a-renal"]
    assert ids(client.get("/worklist.json?rule=oral.max-daily,interaction", headers=READ)) == [
        "f-c-max", "f-b-cns"]
    assert ids(client.get("/worklist.json?older_than_h=24", headers=READ)) == ["f-a-renal"]
    assert ids(client.get("/worklist.json?newer_than_h=2", headers=READ)) == ["f-c-max"]
    page2 = client.get("/worklist.json?per_page=2&page=2", headers=READ)
    assert ids(page2) == ["f-b-cns"] and page2.get_json()["total"] == 3


@pytest.mark.parametrize("query", ["severity=urgent", "older_than_h=soon", "page=0",
                                   "per_page=1000", "sort=age", "rule=Renal!"])
def test_bad_queries_are_400(app: Flask, client: FlaskClient, query: str) -> None:
    resp = client.get(f"/worklist.json?{query}", headers=READ)
    assert resp.status_code == 400
    assert resp.get_json()["resourceType"] == "OperationOutcome"


def test_authentication(app: Flask, client: FlaskClient) -> None:
    seeded(app)
    assert client.get("/worklist.json").status_code == 401
    assert client.get("/worklist.json", headers={"Authorization": "Bearer x"}).status_code == 401
    resp = client.post("/worklist/f-a-renal/resolve", json={"outcome": "stopped"},
                       headers=READ)
    assert resp.status_code == 403          # resolving writes: a :write token
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    page = client.get("/worklist")
    assert page.status_code == 200 and b"Authentication is on" in page.data


def test_resolve_records_who_and_when_and_the_entry_leaves(app: Flask,
                                                         client: FlaskClient) -> None:
    seeded(app)
    assert client.post("/worklist/nope/resolve", json={"outcome": "stopped"},
                       headers=WRITE).status_code == 404
    bad = client.post("/worklist/f-a-renal/resolve", json={"outcome": "fixed"}, headers=WRITE)
    assert bad.status_code == 400 and "dose-changed" in bad.get_json()["issue"][0]["diagnostics"]
    assert client.post("/worklist/f-a-renal/resolve", data="[]", headers={
        **WRITE, "Content-Type": "application/json"}).status_code == 400
    assert client.post("/worklist/f-a-renal/resolve", data="{", headers={
        **WRITE, "Content-Type": "application/json"}).status_code == 400
    assert client.post("/worklist/f-a-renal/resolve", data="x", headers={
        **WRITE, "Content-Type": "text/plain"}).status_code == 415
    resp = client.post("/worklist/f-a-renal/resolve",
                       json={"outcome": "dose-changed", "comment": "reduced to 10 mg tds"},
                       headers=WRITE)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    done = resp.get_json()
    assert (done["finding"], done["status"]) == ("f-a-renal", "resolved")
    assert done["resolution"]["outcome"] == "dose-changed"
    assert done["resolution"]["by"].startswith("token:")
    again = client.post("/worklist/f-a-renal/resolve", json={"outcome": "stopped"},
                        headers=WRITE)
    assert again.status_code == 409
    assert ids(client.get("/worklist.json", headers=READ)) == ["f-c-max", "f-b-cns"]
    ws: WatchStore = app.extensions["watch"]
    with ws.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(worklist_resolutions)).all()]
    assert len(rows) == 1
    row = rows[0]
    assert (row["finding_id"], row["outcome"], row["comment"], row["patient_ref"]) == (
        "f-a-renal", "dose-changed", "reduced to 10 mg tds", "Patient/a")
    assert row["who"] == done["resolution"]["by"] and row["time"].tzinfo is not None
    assert row["server"] == "pending"      # no FHIR server configured here

    # a later re-check raising it with the same numbers: it stays off the list
    recheck(app, "Patient/a", max(NOW, row["time"]) + timedelta(seconds=30), [
        ("MedicationRequest/a1", "f-a-renal", "renal.dose-band", "high", "unchanged")])
    assert "f-a-renal" not in ids(client.get("/worklist.json", headers=READ))
    # raised again for a different reason (a new number): back, naming the resolution
    # (after the resolution, which is stamped with the wall clock: NOW was taken when the
    # module was imported, possibly minutes earlier in a long run)
    later = max(NOW, row["time"]) + timedelta(minutes=1)
    recheck(app, "Patient/a", later, [
        ("MedicationRequest/a1", "f-a-renal|CrCl now 28 mL/min", "renal.dose-band", "high",
         "unchanged")], trigger="Observation/cr-9/_history/1")
    listed = client.get("/worklist.json", headers=READ).get_json()["entries"]
    assert [e["finding"] for e in listed] == ["f-c-max", "f-a-renal", "f-b-cns"]
    back = listed[1]
    assert back["reopened"] is True
    assert back["summary"] == "CrCl now 28 mL/min"
    assert back["resolution"]["outcome"] == "dose-changed"
    assert back["trigger"]["resource"] == "Observation/cr-9"
    assert datetime.fromisoformat(back["since"]) == later
    # ... and it can be resolved again (a new episode)
    assert client.post("/worklist/f-a-renal/resolve", json={"outcome": "monitoring"},
                       headers=WRITE).status_code == 200


def test_a_finding_no_longer_raised_leaves_by_itself(app: Flask, client: FlaskClient) -> None:
    seeded(app)
    recheck(app, "Patient/b", NOW, [
        ("MedicationRequest/b1", "f-b-cns", "interaction.cns-depressant", "moderate",
         "cancelled")])
    assert ids(client.get("/worklist.json", headers=READ)) == ["f-a-renal", "f-c-max"]
    gone = client.post("/worklist/f-b-cns/resolve", json={"outcome": "stopped"}, headers=WRITE)
    assert gone.status_code == 409 and "no longer" in gone.get_json()["issue"][0]["diagnostics"]
    # the order is no longer active: the latest re-check of the patient did not check it
    recheck(app, "Patient/c", NOW, [], orders=[])
    assert ids(client.get("/worklist.json", headers=READ)) == ["f-a-renal"]


def test_off_without_the_watch(tmp_path: Path) -> None:
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3", "TESTING": True,
                      "API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False})
    client = app.test_client()
    resp = client.get("/worklist.json")
    assert resp.status_code == 404 and resp.get_json()["resourceType"] == "OperationOutcome"
    page = client.get("/worklist")
    assert page.status_code == 200 and b'id="watch-off"' in page.data


def test_the_page_has_the_look_and_headers_of_the_others(app: Flask, client: FlaskClient
                                                         ) -> None:
    resp = client.get("/worklist")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    body = resp.get_data(as_text=True)
    assert "<h1>Pharmacist worklist</h1>" in body
    assert '<a href="/worklist" aria-current="page">Worklist</a>' in body
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    refs = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', body)
    assert "/static/worklist.js" in refs and "/static/style.css" in refs
    assert all(ref.startswith(("/", "data:")) for ref in refs), refs
    for option in ("dose-changed", "stopped", "monitoring", "not-relevant"):
        assert f'<option value="{option}">' in body
    script = client.get("/static/worklist.js")
    assert script.status_code == 200 and b"/worklist.json" in script.data
    script.close()
