"""``baclofen-patient-view`` (issue 13): at chart open the patient's active baclofen orders are
reviewed against the record (the native path's review mode, the same prefetch keys); only high
and moderate findings become cards, and a card already returned for the same finding of the
same patient within CDS_REPEAT_AFTER_H hours is not returned again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from service import create_app
from service.cds.discovery import prefetch_templates
from service.knowledge import load
from service.store import get_store
from tests.support import builders as b
from tests.support.cdsclient import EXT, SIGN, VIEW, cards, hook_call, post, rules_in, searchset
from tests.support.checks import CLOCK, CLOCK_TIME, post_check

OXY = {"resourceType": "MedicationRequest", "id": "oxy", "status": "active", "intent": "order",
       "subject": {"reference": "Patient/pat-1"},
       "medicationCodeableConcept": {"text": "oxycodone 5 MG Oral Tablet"}}


def active(dose: float = 40, frequency: int = 3, id: str = "bac-1", **extra: Any
           ) -> dict[str, Any]:
    return b.order(b.dosage(dose, frequency=frequency), id=id, status="active", **extra)


def view_call(*requests: dict[str, Any], patient: dict[str, Any] | None = None,
              **kw: Any) -> dict[str, Any]:
    return hook_call(service=VIEW, patient=patient or b.patient(),
                     prefetch={"medicationRequests": searchset(*requests)}, **kw)


@pytest.fixture
def view_app(tmp_path: Path) -> Flask:
    return create_app({"CDS_REQUIRE_JWT": False, "TESTING": True,
                       "API_REQUIRE_AUTH": False,
                       "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3"}, clock=CLOCK)


@pytest.fixture
def view(view_app: Flask) -> FlaskClient:
    return view_app.test_client()


def test_discovery_lists_patient_view_with_the_same_prefetch(view: FlaskClient) -> None:
    services = {s["id"]: s for s in view.get("/cds-services").get_json()["services"]}
    pv = services[VIEW]
    assert pv["hook"] == "patient-view"
    assert pv["prefetch"] == services[SIGN]["prefetch"] == prefetch_templates(load())


def test_active_orders_are_reviewed_and_only_alerts_are_cards(view: FlaskClient) -> None:
    got = cards(post(view, view_call(active(), OXY), VIEW))
    assert got
    assert {c["indicator"] for c in got} <= {"critical", "warning"}
    rules = rules_in(got)
    assert "oral.max-daily" in rules and "interaction.opioid" in rules
    for card in got:
        di = card["extension"][EXT]
        assert di["status"] == "final"
        assert di["implicated"][0]["reference"] == "MedicationRequest/bac-1"
    # a review: the order as it stands, no titration or new-order checks
    assert not [r for r in rules if r.startswith("oral.titration")]


def test_same_high_and_moderate_findings_as_the_native_review(view: FlaskClient) -> None:
    record = [active(), OXY]
    native = post_check(view, b.bundle(b.patient(), *record))
    assert native.status_code == 200
    alerts = sorted(di["identifier"][0]["value"] for di in b.issues(native.get_json())
                    if di["severity"] in ("high", "moderate"))
    got = cards(post(view, view_call(*record), VIEW))
    assert rules_in(got) == alerts


def test_a_card_is_not_returned_again_within_the_period(view_app: Flask,
                                                        view: FlaskClient) -> None:
    first = cards(post(view, view_call(active()), VIEW))
    assert first
    assert cards(post(view, view_call(active()), VIEW)) == []
    # another patient with the same kind of order gets their own cards
    other = active(subject={"reference": "Patient/pat-2"})
    assert cards(post(view, view_call(other, patient=b.patient(id="pat-2"),
                                      patient_id="pat-2"), VIEW))
    # a changed dose is a new finding
    changed = cards(post(view, view_call(active(dose=35)), VIEW))
    assert "oral.max-daily" in rules_in(changed)
    # the order hooks never suppress (and are not suppressed by patient-view)
    sign = cards(post(view, hook_call(b.order(b.dosage(40, frequency=3)),
                                      patient=b.patient())))
    assert "oral.max-daily" in rules_in(sign)
    # after CDS_REPEAT_AFTER_H (24 h by default) the card is shown again
    with get_store(view_app).engine.begin() as conn:
        conn.execute(text("UPDATE checks SET time = :t"),
                     {"t": (CLOCK_TIME - timedelta(hours=25)).replace(tzinfo=None)})
    again = cards(post(view, view_call(active()), VIEW))
    assert rules_in(again) == rules_in(first)


def test_a_retried_call_gets_its_cards_again(view: FlaskClient) -> None:
    body = view_call(active())
    first = cards(post(view, body, VIEW))
    assert first
    # the same hookInstance again (the client never got the first answer)
    assert rules_in(cards(post(view, body, VIEW))) == rules_in(first)
    assert cards(post(view, view_call(active()), VIEW)) == []


def test_repeat_period_zero_always_shows(tmp_path: Path) -> None:
    client = create_app({"CDS_REQUIRE_JWT": False, "TESTING": True, "CDS_REPEAT_AFTER_H": "0",
                         "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3"},
                        clock=CLOCK).test_client()
    first = cards(post(client, view_call(active()), VIEW))
    assert rules_in(cards(post(client, view_call(active()), VIEW))) == rules_in(first)


def test_only_returned_cards_count_as_shown(view: FlaskClient) -> None:
    # a low-only order gives no card, so nothing is remembered for it
    low = active(dose=5, frequency=None)
    assert cards(post(view, view_call(low), VIEW)) == []


@pytest.mark.parametrize("record", [
    pytest.param([], id="no_orders"),
    pytest.param([b.order(b.dosage(40, frequency=3), id="d", status="draft")], id="draft"),
    pytest.param([b.order(b.dosage(40, frequency=3), id="s", status="stopped")], id="stopped"),
    pytest.param([OXY], id="not_baclofen"),
])
def test_nothing_to_review_is_200_with_no_card(view: FlaskClient,
                                               record: list[dict[str, Any]]) -> None:
    assert cards(post(view, view_call(*record), VIEW)) == []


def test_an_unreadable_order_of_the_record_is_left_out(view: FlaskClient) -> None:
    broken = active(id="bac-broken")
    broken["dosageInstruction"][0]["route"] = "by mouth"   # not a CodeableConcept
    got = cards(post(view, view_call(broken, active(id="bac-2")), VIEW))
    assert got
    assert {c["extension"][EXT]["implicated"][0]["reference"] for c in got} == {
        "MedicationRequest/bac-2"}


def test_patient_view_needs_no_draft_orders_but_a_patient(view: FlaskClient) -> None:
    body = view_call(active())
    del body["context"]["patientId"]
    resp = post(view, body, VIEW)
    assert resp.status_code == 400
    wrong = view_call(active())
    wrong["hook"] = "order-sign"
    assert post(view, wrong, VIEW).status_code == 400


def test_patient_view_calls_are_recorded(view_app: Flask, view: FlaskClient) -> None:
    body = view_call(active())
    got = cards(post(view, body, VIEW))
    with get_store(view_app).engine.connect() as conn:
        rows = conn.execute(text(
            "select c.hook, c.endpoint, f.card_uuid from checks c join findings f on "
            "f.check_id = c.id where c.hook_instance = :h"), {"h": body["hookInstance"]}).all()
    assert {r[0] for r in rows} == {"patient-view"}
    assert {r[1] for r in rows} == {f"cds-services/{VIEW}"}
    assert {r[2] for r in rows} == {c["uuid"] for c in got}


def test_epic_style_at_chart_open_replaces_the_active_order(tmp_path: Path) -> None:
    client = create_app({"CDS_REQUIRE_JWT": False, "TESTING": True, "CDS_CLIENT_STYLE": "epic",
                         "DATABASE_URL": f"sqlite:///{tmp_path}/e.sqlite3"},
                        clock=CLOCK).test_client()
    got = cards(post(client, view_call(active()), VIEW))
    card = next(c for c in got if c["source"]["topic"]["code"] == "oralmaxdaily")
    create, delete = card["suggestions"]
    assert create["actions"][0]["type"] == "create"
    assert delete["actions"][0] == {
        "type": "delete", "resourceId": "MedicationRequest/bac-1",
        "description": "Remove the order whose dose is replaced by the corrected order"}
    assert delete["label"] == "Remove the order as written"
