"""Epic's conventions (issue 13): the ``epic`` card style (one action per suggestion, create and
delete only, ``selectionBehavior: any``, topic codes of letters and digits with the rule id in
``display``), feedback in every form clients send (the CDS Hooks ``overrideReason``, Epic's
``overrideReasons`` and its ``com.epic.cdshooks.feedback.overrideReason.*`` keys) for every
style, and the clinician's comment stored and shown in the alert report."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from service import create_app
from service.cli import format_report
from service.store import SCHEMA_VERSION, Store, get_store
from tests.support import builders as b
from tests.support.cdsclient import EXT, SIGN, cards, hook_call, post, rules_in, topics
from tests.support.checks import AUTH

WHEN = "2026-11-25T10:05:00Z"


def make_app(tmp_path: Path, style: str) -> Flask:
    return create_app({"CDS_REQUIRE_JWT": False, "CDS_CLIENT_STYLE": style,
                       "API_REQUIRE_AUTH": True, "API_TOKENS": "t-read",
                       "DATABASE_URL": f"sqlite:///{tmp_path}/{style}.sqlite3",
                       "TESTING": True})


@pytest.fixture
def epic(tmp_path: Path) -> FlaskClient:
    return make_app(tmp_path, "epic").test_client()


@pytest.fixture
def standard(tmp_path: Path) -> FlaskClient:
    return make_app(tmp_path, "standard").test_client()


def overdose_call() -> dict[str, Any]:
    # 40 mg three times a day: over the single and the daily maximum, with a correction
    return hook_call(b.order(b.dosage(40, frequency=3), id="draft-1"), patient=b.patient())


def test_epic_style_cards(epic: FlaskClient, standard: FlaskClient) -> None:
    got = cards(post(epic, overdose_call()))
    plain = cards(post(standard, overdose_call()))
    # the same findings, only the presentation differs
    assert rules_in(got) == rules_in(plain)
    assert len(got) == len(plain)
    for card, twin in zip(sorted(got, key=lambda c: c["source"]["topic"]["display"]),
                          sorted(plain, key=lambda c: c["source"]["topic"]["code"]),
                          strict=True):
        code, display = card["source"]["topic"]["code"], card["source"]["topic"]["display"]
        assert re.fullmatch(r"[A-Za-z0-9]+", code), code
        assert display == twin["source"]["topic"]["code"]
        assert code == re.sub(r"[^A-Za-z0-9]", "", display)
        assert card["indicator"] == twin["indicator"]
    by_code = {c["source"]["topic"]["code"]: c for c in got}
    assert "oralmaxdaily" in by_code
    card = by_code["oralmaxdaily"]
    # the DetectedIssue keeps the rule id as it is
    assert card["extension"][EXT]["identifier"][0]["value"] == "oral.max-daily"
    assert card["selectionBehavior"] == "any"
    suggestions = card["suggestions"]
    assert [len(s["actions"]) for s in suggestions] == [1, 1]
    assert [s["actions"][0]["type"] for s in suggestions] == ["create", "delete"]
    assert all(s["uuid"] for s in suggestions)
    assert len({s["uuid"] for s in suggestions}) == 2
    created = suggestions[0]["actions"][0]["resource"]
    assert created["resourceType"] == "MedicationRequest" and "id" not in created
    assert suggestions[1]["actions"][0]["resourceId"] == "MedicationRequest/draft-1"
    # the standard style keeps the update form
    twin = next(c for c in plain if c["source"]["topic"]["code"] == "oral.max-daily")
    assert twin["selectionBehavior"] == "at-most-one"
    assert [a["type"] for s in twin["suggestions"] for a in s["actions"]] == ["update"]
    # the created order is the standard style's corrected order, without the draft's id
    update = twin["suggestions"][0]["actions"][0]["resource"]
    assert created == {k: v for k, v in update.items() if k != "id"}


def test_epic_created_order_passes_the_checker(epic: FlaskClient) -> None:
    got = cards(post(epic, overdose_call()))
    card = next(c for c in got if c["source"]["topic"]["code"] == "oralmaxdaily")
    created = dict(card["suggestions"][0]["actions"][0]["resource"], id="corrected")
    again = cards(post(epic, hook_call(created, patient=b.patient())))
    assert "oral.max-daily" not in rules_in(again)
    assert "oral.max-single" not in rules_in(again)


def test_epic_gathered_card_topic(epic: FlaskClient) -> None:
    prn = b.order(b.dosage(10, frequency=None, asNeededBoolean=True), id="prn")
    got = cards(post(epic, hook_call(prn, patient=b.patient())))
    assert "lowfindings" in topics(got)
    gathered = next(c for c in got if c["source"]["topic"]["code"] == "lowfindings")
    assert gathered["source"]["topic"]["display"] == "low-findings"


FEEDBACK_FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "cds-feedback" / \
    "override-forms.json"


def _override_forms(card: str) -> list[tuple[dict[str, Any], str, str | None]]:
    data = json.loads(FEEDBACK_FIXTURE.read_text(encoding="utf-8"))
    items = json.loads(json.dumps(data["feedback"]).replace('"CARD"', json.dumps(card)))
    return [(item, reason, comment)
            for item, (reason, comment) in zip(items, data["expected"], strict=True)]


@pytest.mark.parametrize("style", ["standard", "epic"])
def test_feedback_in_every_form_is_stored_with_its_comment(tmp_path: Path, style: str) -> None:
    app = make_app(tmp_path, style)
    client = app.test_client()
    got = cards(post(client, overdose_call()))
    critical = next(c for c in got if c["indicator"] == "critical")
    rule = critical["extension"][EXT]["identifier"][0]["value"]
    forms = _override_forms(critical["uuid"])
    for body, _, _ in forms:
        resp = client.post(f"/cds-services/{SIGN}/feedback", json={"feedback": [body]})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert resp.get_json() == {"received": 1, "joined": 1}
    with get_store(app).engine.connect() as conn:
        rows = conn.execute(text("select override_reason, user_comment from feedback "
                                 "order by id")).all()
    assert [tuple(r) for r in rows] == [(reason, comment) for _, reason, comment in forms]
    report = {r.rule_id: r for r in get_store(app).report()}[rule]
    assert report.overridden == 1   # one card, however many feedback items
    assert report.comments[0] == ("renal-reviewed", "plan D")
    assert [c for _, c in report.comments] == ["plan D", "plan C", "neuro plan B",
                                               "neuro plan A"]

    assert "specialist-directed" in format_report([report]) and "plan D" in format_report(
        [report])
    shown = client.get("/report", headers={"Authorization": "Bearer t-read"}).get_json()
    row = next(r for r in shown["rules"] if r["rule"] == rule)
    assert row["overrideComments"][0] == {"reason": "renal-reviewed",
                                          "display": "Kidney function reviewed; dose "
                                                     "appropriate", "comment": "plan D"}


@pytest.mark.parametrize(("item", "expression"), [
    ({"overrideReasons": "busy"}, "feedback[0].overrideReasons"),
    ({"overrideReasons": {"reason": "busy"}}, "feedback[0].overrideReasons.reason"),
    ({"overrideReasons": {"userComment": 7}}, "feedback[0].overrideReasons.userComment"),
    ({"com.epic.cdshooks.feedback.overrideReason.code": 5},
     "feedback[0].com.epic.cdshooks.feedback.overrideReason.code"),
    ({"outcome": "accepted", "overrideReasons": {"reason": {"code": "other"}}},
     "feedback[0].overrideReason"),
])
def test_malformed_epic_feedback_is_400(standard: FlaskClient, item: dict[str, Any],
                                        expression: str) -> None:
    body = {"card": "c-1", "outcome": "overridden", "outcomeTimestamp": WHEN, **item}
    resp = standard.post(f"/cds-services/{SIGN}/feedback", json={"feedback": [body]})
    assert resp.status_code == 400
    assert resp.get_json()["issue"][0]["expression"] == [expression]


def test_empty_override_objects_on_an_accepted_card_are_ignored(standard: FlaskClient) -> None:
    body = {"card": "c-2", "outcome": "accepted", "outcomeTimestamp": WHEN,
            "overrideReasons": {}, "overrideReason": {"reason": None}}
    resp = standard.post(f"/cds-services/{SIGN}/feedback", json={"feedback": [body]})
    assert resp.status_code == 200
    assert resp.get_json() == {"received": 1, "joined": 0}


def test_the_comment_column_is_added_to_an_older_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.sqlite3"
    store = Store(url).start()
    with store.engine.begin() as conn:  # make it look like a version 1 database
        conn.exec_driver_sql("ALTER TABLE feedback DROP COLUMN user_comment")
        conn.exec_driver_sql("UPDATE schema_version SET version = 1")
    store.close()
    store = Store(url).start()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version FROM schema_version").scalar() \
            == SCHEMA_VERSION
    store.record_feedback("s", "card-x", "overridden", [], "other", datetime.now(UTC),
                          user_comment="kept")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT user_comment FROM feedback").scalar() == "kept"
    store.close()


def test_alert_page_has_the_comment_column(standard: FlaskClient) -> None:
    page = standard.get("/alerts", headers=AUTH).get_data(as_text=True)
    assert "Newest override comments" in page
