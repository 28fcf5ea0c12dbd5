"""The web page (issue 9) through the Flask test client: each page's status and content, the
rule browser against the knowledge data, the alert report and its authentication, the demo
patients (dates, findings through POST /MedicationRequest/$check) and escaping."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import text

from service import create_app
from service.knowledge import load
from service.store import get_store
from service.web.ui import DEMO_DIR, demo_bundle, demos, renal_values, shift_dates
from tests.support.builders import by_rule, issues
from tests.support.checks import AUTH, TOKEN, post_check
from tests.support.demo import DEMO_FINDINGS
from tests.support.fhir_validate import validate


def make_app(tmp_path: Path, demo_dir: Path | None = None, **config: Any) -> Flask:
    settings: dict[str, Any] = {
        "API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False,
        "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "TESTING": True,
    }
    settings.update(config)
    app = create_app(settings)
    if demo_dir is not None:
        app.config["DEMO_DIR"] = str(demo_dir)
    return app


@pytest.fixture
def open_client(tmp_path: Path) -> FlaskClient:
    """Authentication off, as after `make run`."""
    return make_app(tmp_path).test_client()


def page_data(body: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', body, re.S)
    assert m, "the page carries its data as JSON"
    data: dict[str, Any] = json.loads(m.group(1))
    return data


def rule_article(body: str, rule_id: str) -> str:
    m = re.search(r'<article class="rule" id="rule-' + re.escape(rule_id) + r'".*?</article>',
                  body, re.S)
    assert m, f"no article for {rule_id}"
    return m.group(0)


# --- pages -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "heading"), [
    ("/", "Try an order"), ("/rules", "Rules"), ("/alerts", "Alert report"),
], ids=["try", "rules", "alerts"])
def test_page_is_served_with_its_heading_and_safe_headers(open_client, path, heading):
    resp = open_client.get(path)
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    body = resp.get_data(as_text=True)
    assert f"<h1>{heading}</h1>" in body
    assert f"knowledge {load().version}" in body
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # nothing is fetched from outside: every script and stylesheet is served by the service
    for ref in re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', body):
        assert ref.startswith(("/", "data:")), ref
    assert 'aria-current="page"' in body
    assert '<a class="skip" href="#main">' in body


@pytest.mark.parametrize("name", ["style.css", "common.js", "markdown.js", "try.js",
                                  "alerts.js"])
def test_static_files_are_served(open_client, name):
    resp = open_client.get(f"/static/{name}")
    assert resp.status_code == 200
    assert len(resp.data) > 500
    resp.close()


def test_try_page_lists_every_demo_and_the_prefetch_templates(open_client):
    body = open_client.get("/").get_data(as_text=True)
    data = page_data(body)
    names = [d["name"] for d in data["demos"]]
    assert names == ["1-normal-kidneys", "2-crcl-40", "3-dialysis", "4-child-6y",
                     "5-older-opioid", "6-intrathecal-pump"]
    for d in data["demos"]:
        assert f'<option value="{d["name"]}">{html.escape(d["label"])}</option>' in body
    # the page builds its prefetch from the service's own templates (GET /cds-services)
    discovery = open_client.get("/cds-services").get_json()
    sign = next(s for s in discovery["services"] if s["id"] == "baclofen-order-sign")
    assert data["prefetch"] == sign["prefetch"]
    assert data["service"] == "baclofen-order-sign"
    assert data["apiAuth"] is False and data["cdsJwt"] is False
    for field in ("product", "dose", "unit", "frequency", "route", "start", "record", "demo"):
        assert f'<label for="{field}">' in body and f'id="{field}"' in body
    assert 'id="auth-api"' not in body and 'id="token"' not in body


def test_try_page_says_authentication_is_on(client):
    """The conftest app: API_REQUIRE_AUTH on, CDS_REQUIRE_JWT off."""
    body = client.get("/").get_data(as_text=True)
    assert 'id="auth-api"' in body
    assert "need a bearer token from" in body and "API_TOKENS" in body
    assert '<label for="token">Bearer token</label>' in body
    assert 'id="auth-cds"' not in body
    assert page_data(body)["apiAuth"] is True


def test_try_page_says_cds_jwt_is_needed(tmp_path):
    client = make_app(tmp_path, CDS_REQUIRE_JWT=True).test_client()
    body = client.get("/").get_data(as_text=True)
    assert 'id="auth-cds"' in body and "CDS_REQUIRE_JWT" in body
    assert '<label for="cds-token">CDS Hooks JWT</label>' in body
    assert 'id="auth-api"' not in body
    assert page_data(body)["cdsJwt"] is True


def test_alerts_page_says_authentication_is_on(client):
    body = client.get("/alerts").get_data(as_text=True)
    assert 'id="auth-api"' in body and "the alert report (GET /report)" in body
    assert 'id="auth-cds"' not in body


# --- rule browser ----------------------------------------------------------------------------

def test_rule_browser_lists_every_rule_from_the_knowledge_data(open_client):
    kb = load()
    body = open_client.get("/rules").get_data(as_text=True)
    listed = re.findall(r'<article class="rule" id="rule-[^"]+" data-rule="([^"]+)">', body)
    assert listed == list(kb.rules)
    assert f'<strong id="kb-version">{kb.version}</strong>' in body
    for rule in kb.rules.values():
        article = rule_article(body, rule.id)
        assert html.escape(rule.title) in article
        assert html.escape(rule.fires_when) in article
        assert html.escape(rule.severity) in article
        assert f'href="{html.escape(rule.source_url)}"' in article
        if rule.code:
            assert f"<code>{rule.code}</code> {html.escape(kb.code_display[rule.code])}" in article
        else:
            assert "none (text only)" in article
        for key, value in rule.thresholds().items():
            assert f"<code>{key}</code> = {html.escape(str(value))}" in article


@pytest.mark.parametrize(("rule_id", "key", "us", "uk"), [
    ("oral.max-daily", "max_daily_mg", "80", "100"),
    ("oral.max-daily", "high_daily_mg", "100", "120"),
    ("oral.max-single", "max_single_mg", "20", "25"),
    ("pediatric.age-cap", "pediatric_mid_cap_age_below", "12", "18"),
], ids=["max-daily-max", "max-daily-high", "max-single", "pediatric-age-cap"])
def test_rule_browser_shows_thresholds_per_profile(open_client, rule_id, key, us, uk):
    body = open_client.get("/rules").get_data(as_text=True)
    article = rule_article(body, rule_id)
    row = re.search(r'<tr><th scope="row"><code>' + key + r'</code></th>(.*?)</tr>', article)
    assert row, f"{key} is not shown for {rule_id}"
    assert re.findall(r'<td class="num">([^<]*)</td>', row.group(1)) == [us, uk]


def test_rule_browser_shows_no_profile_table_for_other_families(open_client):
    body = open_client.get("/rules").get_data(as_text=True)
    assert "Per profile" not in rule_article(body, "renal.dialysis")
    assert "Per profile" in rule_article(body, "oral.max-daily")


def test_rule_browser_names_the_second_source(open_client):
    kb = load()
    body = open_client.get("/rules").get_data(as_text=True)
    article = rule_article(body, "oral.max-daily")
    assert f'href="{html.escape(kb.sources["S10"]["url"])}"' in article


# --- alert report ----------------------------------------------------------------------------

def test_report_needs_a_bearer_token_when_auth_is_on(client):
    resp = client.get("/report")
    assert resp.status_code == 401
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "login"
    resp = client.get("/report", headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401
    resp = client.get("/report", headers=AUTH)
    assert resp.status_code == 200
    assert resp.get_json() == {"knowledgeVersion": load().version,
                               "generated": resp.get_json()["generated"], "rules": []}


def _demo(client: FlaskClient, name: str) -> dict[str, Any]:
    resp = client.get(f"/demo/{name}")
    assert resp.status_code == 200
    assert resp.mimetype == "application/fhir+json"
    body: dict[str, Any] = resp.get_json()
    return body


def test_report_counts_checks_and_feedback(client):
    """A $check and a CDS call are recorded; feedback on the cards is counted per rule."""
    bundle = _demo(client, "3-dialysis")
    assert post_check(client, bundle).status_code == 200
    patient = next(e["resource"] for e in bundle["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    draft = next(e["resource"] for e in bundle["entry"]
                 if e["resource"]["resourceType"] == "MedicationRequest"
                 and e["resource"]["status"] == "draft")
    context = [e["resource"] for e in bundle["entry"]
               if e["resource"] is not patient and e["resource"] is not draft]
    call = {
        "hook": "order-sign", "hookInstance": "0b8f0c52-8c39-4a1e-9b49-5a3c1f0e7d11",
        "context": {"userId": "Practitioner/p1", "patientId": patient["id"],
                    "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                    "entry": [{"resource": draft}]}},
        "prefetch": {"patient": patient,
                     "conditions": {"resourceType": "Bundle", "type": "searchset",
                                    "entry": [{"resource": r} for r in context]}},
    }
    cards = client.post("/cds-services/baclofen-order-sign", json=call).get_json()["cards"]
    card = next(c for c in cards if c["source"]["topic"]["code"] == "renal.dialysis")
    # a second call (another hookInstance): its cards are cards of their own
    call2 = {**call, "hookInstance": "5c0e1f3a-7d2b-4f6e-8a91-0b3c4d5e6f70"}
    second = client.post("/cds-services/baclofen-order-sign", json=call2).get_json()["cards"][0]
    assert second["uuid"] != card["uuid"]
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    feedback = {"feedback": [
        {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": when,
         "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]},
        {"card": second["uuid"], "outcome": "overridden", "outcomeTimestamp": when,
         "overrideReason": {"reason": {"system": "urn:baclofen-check:override-reason",
                                       "code": "renal-reviewed"}}},
    ]}
    resp = client.post("/cds-services/baclofen-order-sign/feedback", json=feedback)
    assert resp.get_json() == {"received": 2, "joined": 2}
    report = client.get("/report", headers=AUTH).get_json()
    row = next(r for r in report["rules"] if r["rule"] == "renal.dialysis")
    assert row["title"] == load().rule("renal.dialysis").title
    # one finding from $check, two distinct cards from the CDS calls
    assert (row["fired"], row["accepted"], row["overridden"]) == (3, 1, 1)
    # the first call retried (same hookInstance and body): recorded once, same card uuids
    again = client.post("/cds-services/baclofen-order-sign", json=call).get_json()["cards"]
    assert [c["uuid"] for c in again] == [c["uuid"] for c in cards]
    retry_feedback = {"feedback": [{"card": again[0]["uuid"], "outcome": "accepted",
                                    "outcomeTimestamp": when}]}
    assert client.post("/cds-services/baclofen-order-sign/feedback",
                       json=retry_feedback).get_json() == {"received": 1, "joined": 1}
    report = client.get("/report", headers=AUTH).get_json()
    row = next(r for r in report["rules"] if r["rule"] == "renal.dialysis")
    assert row["fired"] == 3
    assert row["overrideReasons"] == [{
        "code": "renal-reviewed", "display": "Kidney function reviewed; dose appropriate",
        "count": 1}]
    assert row["medianLatencyMs"] is not None


# --- demo patients ---------------------------------------------------------------------------

def test_unknown_demo_is_404_operation_outcome(open_client):
    for name in ("nope", "..%2Fconftest", "1-NORMAL-KIDNEYS"):
        resp = open_client.get(f"/demo/{name}")
        assert resp.status_code == 404
        assert resp.get_json()["resourceType"] == "OperationOutcome"


def test_demo_dates_move_to_today(open_client):
    bundle = _demo(open_client, "2-crcl-40")
    today = datetime.now(UTC).date()
    assert bundle["timestamp"] == today.isoformat() + "T09:00:00Z"
    draft = next(e["resource"] for e in bundle["entry"]
                 if e["resource"]["resourceType"] == "MedicationRequest"
                 and e["resource"]["status"] == "draft")
    start = draft["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"]
    assert start == today.isoformat()
    raw = json.loads((DEMO_DIR / "demo-2-crcl-40.json").read_text())
    shift = (today - date(2026, 11, 25)).days
    born = date.fromisoformat(raw["entry"][0]["resource"]["birthDate"])
    assert bundle["entry"][0]["resource"]["birthDate"] == (born + timedelta(shift)).isoformat()


@pytest.mark.parametrize(("value", "days", "moved"), [
    ("2026-11-25", 3, "2026-11-28"),
    ("2026-11-25T09:00:00Z", 7, "2026-12-02T09:00:00Z"),
    ("2024-02-28T23:30:00+05:30", 1, "2024-02-29T23:30:00+05:30"),
    ("2026-11-25T09:00:00.123Z", -25, "2026-10-31T09:00:00.123Z"),
    ("2026-02-30", 1, "2026-02-30"),          # not a date: kept as written
    ("2026-11", 1, "2026-11"),                # partial dates are not moved
    ("pat-2026-11-25", 1, "pat-2026-11-25"),  # an id that holds a date is not a date
], ids=["date", "datetime", "leap-day-offset", "fraction-back", "invalid", "partial", "id"])
def test_shift_dates(value, days, moved):
    assert shift_dates({"a": [value], "b": value, "n": 5}, days) == {
        "a": [moved], "b": moved, "n": 5}


def test_demo_without_timestamp_is_served_as_written(tmp_path):
    path = tmp_path / "demo-x.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": {"resourceType": "Patient",
                                                        "birthDate": "1950-01-01"}}]}))
    (found,) = demos(tmp_path)
    assert demo_bundle(found, date(2030, 1, 1))["entry"][0]["resource"]["birthDate"] == \
        "1950-01-01"


@pytest.mark.parametrize(("name", "expected"), DEMO_FINDINGS,
                         ids=[name for name, _ in DEMO_FINDINGS])
def test_demo_patient_gives_the_expected_findings(client, name, expected):
    resp = post_check(client, _demo(client, name))
    assert resp.status_code == 200
    result = resp.get_json()
    validate(result)
    found = sorted((
        next(i["value"] for i in di["identifier"] if i["system"] == "urn:baclofen-check:rule"),
        di["severity"]) for di in issues(result))
    assert found == sorted((rule, severity) for rule, severity, _ in expected)
    for rule, _severity, numbers in expected:
        detail = by_rule(result, rule)["detail"]
        for number in numbers:
            assert number in detail, f"{rule}: {number!r} not in {detail!r}"
    # a demo is a complete record: nothing was skipped and every check could run
    assert not [e for e in result["entry"]
                if e["resource"]["resourceType"] == "OperationOutcome"]


def test_crcl_40_demo_is_in_the_moderate_band_above_its_cap(client):
    """The browser test raises this demo's dose above the renal cap: the numbers it expects."""
    bundle = _demo(client, "2-crcl-40")
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "MedicationRequest" and res["status"] == "draft":
            res["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = 20
    result = post_check(client, bundle).get_json()
    validate(result)
    di = by_rule(result, "renal.dose-band")
    assert di["severity"] == "moderate"
    for words in ("CrCl 40 mL/min", "cap 40 mg/day", "60 mg/day", "Cockcroft-Gault"):
        assert words in di["detail"]


# --- escaping --------------------------------------------------------------------------------

def test_demo_labels_are_escaped_in_the_page(tmp_path):
    demo_dir = tmp_path / "demos"
    demo_dir.mkdir()
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    (demo_dir / "demo-evil.json").write_text(json.dumps({
        "resourceType": "Bundle", "type": "collection",
        "meta": {"tag": [{"system": "urn:baclofen-check:demo", "code": "evil",
                          "display": evil}]}, "entry": []}))
    client = make_app(tmp_path, demo_dir).test_client()
    body = client.get("/").get_data(as_text=True)
    assert evil not in body
    assert "<img src=x" not in body and '<script>alert("x")' not in body
    assert str(escape(evil)) in body  # as Jinja escapes it
    # inside the page's JSON data block, "<" is written as \u003c, so it cannot end the block
    assert page_data(body)["demos"] == [{"name": "evil", "label": evil}]
    assert body.count("</script>") == body.count("<script")


def test_no_demo_directory_is_said_on_the_page(tmp_path):
    client = make_app(tmp_path, tmp_path / "missing").test_client()
    body = client.get("/").get_data(as_text=True)
    assert "No demo patients were found" in body
    assert page_data(body)["demos"] == []
    assert client.get("/demo/1-normal-kidneys").status_code == 404


def test_token_is_never_in_the_page(client):
    body = client.get("/", headers=AUTH).get_data(as_text=True)
    assert TOKEN not in body


def test_rule_browser_shows_the_kidney_function_values(open_client):
    body = open_client.get("/rules").get_data(as_text=True)
    m = re.search(r'<table class="data small" id="renal-values">.*?</table>', body, re.S)
    assert m, "the kidney-function values are shown with the renal rules"
    values = renal_values(load())
    assert ("cap_fraction", "mild 2/3, moderate 1/2") in values
    for key, value in values:
        assert f'<tr><th scope="row"><code>{key}</code></th><td>{escape(value)}</td></tr>' \
            in m.group(0)
    assert body.index('id="renal-values"') > body.index('id="family-renal-h"')


def test_report_when_the_store_cannot_be_read_is_503(tmp_path):
    app = make_app(tmp_path)

    with get_store(app).engine.begin() as conn:
        conn.execute(text("DROP TABLE feedback"))
    resp = app.test_client().get("/report")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["diagnostics"] == "the audit store cannot be read now; try again"


@pytest.mark.parametrize("name", [name for name, _ in DEMO_FINDINGS])
def test_demo_patient_is_valid_fhir_r4_with_coded_observations(open_client, name):
    bundle = _demo(open_client, name)
    validate(bundle)  # the R4B models, every entry with a fullUrl
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds.count("Patient") == 1
    drafts = [e["resource"] for e in bundle["entry"]
              if e["resource"]["resourceType"] == "MedicationRequest"
              and e["resource"]["status"] == "draft"]
    assert len(drafts) == 1 and "baclofen" in drafts[0]["medicationCodeableConcept"]["text"]
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Observation":
            (coding,) = res["code"]["coding"]
            assert coding["system"] == "http://loinc.org"
            quantity = res["valueQuantity"]
            assert quantity["system"] == "http://unitsofmeasure.org" and quantity["code"]
