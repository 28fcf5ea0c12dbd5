"""CDS Hooks 2.0 service: discovery, calls, cards, suggestions, errors (interfaces.md section 4)."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.cds.discovery import SERVICES, prefetch_templates
from service.cds.prefetch import gather, render, token_values
from service.cds.request import from_hook, parse_call
from service.findings import Correction
from service.knowledge import load
from service.output.cards import corrected_order
from tests.support import builders as b
from tests.support.cdsclient import (
    EXT,
    PRESCRIBE,
    SELECT,
    SIGN,
    cards,
    hook_call,
    post,
    rules_in,
    searchset,
    topic,
    topics,
)
from tests.support.checks import CLOCK_TIME
from tests.support.context_builders import obs

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
OLD = "1940-03-01"  # 86 at the check time
# CDS Hooks calls are checked at the time of the call: the app's clock (tests.support.checks.
# CLOCK), so the results are dated from its fixed time.
RECENT = (CLOCK_TIME - timedelta(days=5)).strftime("%Y-%m-%dT08:00:00Z")


# --- discovery ----------------------------------------------------------------------------

def test_discovery_lists_the_four_services(client: FlaskClient) -> None:
    resp = client.get("/cds-services")
    assert resp.status_code == 200
    services = {s["id"]: s for s in resp.get_json()["services"]}
    assert {k: v["hook"] for k, v in services.items()} == {
        "baclofen-order-select": "order-select",
        "baclofen-order-sign": "order-sign",
        "baclofen-medication-prescribe": "medication-prescribe",
        "baclofen-patient-view": "patient-view",
    }
    for s in services.values():
        assert s["title"] and s["description"]
        assert s["prefetch"]["patient"] == "Patient/{{context.patientId}}"


def test_prefetch_templates_cover_every_input_the_rules_read() -> None:
    kb = load()
    templates = prefetch_templates(kb)
    pc = kb.data["patient_context"]
    joined = "\n".join(templates.values())
    codes = (pc["renal"]["egfr_loinc"] + pc["renal"]["crcl_loinc"]
             + pc["renal"]["creatinine_loinc"] + pc["weight"]["loinc"] + pc["height"]["loinc"]
             + pc["pregnancy"]["observation_loinc"])
    for code in codes:
        assert f"http://loinc.org|{code}" in joined, code
    for code in ("2164-2", "35591-7", "2160-0", "38483-4", "14682-9", "29463-7", "3141-9",
                 "8302-2", "82810-3"):
        assert code in joined
    # Each kind of result has its own key, newest first, so a page size cannot cut one kind
    # off in favour of another.
    for key in ("egfr", "creatinineClearance", "creatinine", "weight", "height", "pregnancy"):
        assert templates[key].startswith("Observation?patient={{context.patientId}}&code=")
        assert "_sort=-date" in templates[key]
    assert templates["conditions"].startswith("Condition?patient={{context.patientId}}")
    assert "302497006" in templates["dialysis"]
    assert templates["procedures"].startswith("Procedure?patient=")
    statuses = templates["medicationRequests"].split("status=")[1].split("&")[0].split(",")
    assert set(statuses) == {"active", "on-hold", "cancelled", "completed", "entered-in-error",
                             "stopped", "draft", "unknown"}
    assert templates["medicationStatements"].startswith("MedicationStatement?patient=")
    assert templates["medicationDispenses"].startswith("MedicationDispense?patient=")


def test_prefetch_tokens_are_filled_and_escaped() -> None:
    call = parse_call(hook_call(b.order(), patient_id="a b"), SERVICES[SIGN])
    values = token_values(call)
    assert values["userPractitionerId"] == "prac-1"
    assert render("Patient/{{context.patientId}}", values) == "Patient/a%20b"
    assert render("X?u={{userPractitionerId}}", values) == "X?u=prac-1"
    assert render("X?e={{context.encounterId}}", values) is None


# --- cards --------------------------------------------------------------------------------

def test_high_finding_card_shape(client: FlaskClient) -> None:
    body = hook_call(b.order(b.dosage(40, frequency=3)), patient=b.patient())
    got = cards(post(client, body))
    card = next(c for c in got if topic(c) == "oral.max-daily")
    assert card["indicator"] == "critical"
    assert "120 mg/day" in card["summary"] and len(card["summary"]) < 140
    assert "40 mg \u00d7 3 a day = 120 mg/day" in card["detail"]
    assert card["source"]["label"] == "baclofen-check"
    assert card["source"]["url"].startswith("https://dailymed.nlm.nih.gov/")
    assert card["source"]["topic"]["system"] == "urn:baclofen-check:rule"
    assert [r["code"] for r in card["overrideReasons"]] == [
        "patient-tolerating", "specialist-directed", "renal-reviewed", "will-monitor",
        "inaccurate", "other"]
    assert {r["system"] for r in card["overrideReasons"]} == {
        "urn:baclofen-check:override-reason"}
    assert card["overrideReasons"][2]["display"] == "Kidney function reviewed; dose appropriate"
    di = card["extension"][EXT]
    assert di["resourceType"] == "DetectedIssue" and di["status"] == "final"
    assert di["severity"] == "high"
    assert di["identifier"][0] == {"system": "urn:baclofen-check:rule", "value": "oral.max-daily"}
    assert card["selectionBehavior"] == "at-most-one"
    (suggestion,) = card["suggestions"]
    assert suggestion["isRecommended"] is True
    assert suggestion["uuid"] != card["uuid"]
    (action,) = suggestion["actions"]
    assert action["type"] == "update"
    assert action["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] == {
        "value": 20, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    assert action["resource"]["dosageInstruction"][0]["timing"]["repeat"]["frequency"] == 4
    uuids = [c["uuid"] for c in got] + [s["uuid"] for c in got for s in c.get("suggestions", [])]
    assert len(set(uuids)) == len(uuids)


def test_moderate_finding_is_a_warning_card(client: FlaskClient) -> None:
    got = cards(post(client, hook_call(b.order(b.dosage(25, frequency=3)), patient=b.patient())))
    card = next(c for c in got if topic(c) == "oral.max-single")
    assert card["indicator"] == "warning"
    assert "25 mg" in card["summary"]
    assert len(card["overrideReasons"]) == 6


def test_low_findings_gathered_in_one_info_card_per_order(client: FlaskClient) -> None:
    prn = b.order(b.dosage(10, frequency=None, asNeededBoolean=True), id="ord-prn")
    preg = {"resourceType": "Observation", "id": "preg-1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "82810-3"}]},
            "subject": {"reference": "Patient/pat-1"}, "effectiveDateTime": RECENT,
            "valueCodeableConcept": {"coding": [{"system": b.SNOMED, "code": "77386006"}]}}
    body = hook_call(prn, patient=b.patient(birth_date="1995-01-01", gender="female"),
                     prefetch={"pregnancy": searchset(preg)})
    got = cards(post(client, body))
    gathered = [c for c in got if topic(c) == "low-findings"]
    assert len(gathered) == 1
    card = gathered[0]
    assert card["indicator"] == "info"
    issues = card["extension"][EXT]
    assert isinstance(issues, list)
    assert sorted(di["identifier"][0]["value"] for di in issues) == ["order.prn-no-max",
                                                                     "pregnancy"]
    assert all(di["severity"] == "low" for di in issues)
    assert "overrideReasons" not in card
    assert len(card["summary"]) < 140 and card["summary"].startswith("2 notes")


def test_a_single_low_finding_still_gets_the_gathered_card(client: FlaskClient) -> None:
    prn = b.order(b.dosage(10, frequency=None, asNeededBoolean=True))
    got = cards(post(client, hook_call(prn, patient=b.patient())))
    (card,) = [c for c in got if topic(c) == "low-findings"]
    assert isinstance(card["extension"][EXT], list) and len(card["extension"][EXT]) == 1
    assert card["summary"].startswith("As-needed baclofen")


def test_no_card_for_a_usual_dose(client: FlaskClient) -> None:
    got = cards(post(client, hook_call(b.order(b.dosage(5, frequency=3)),
                                       patient=b.patient())))
    assert [c for c in got if c["indicator"] in {"critical", "warning"}] == []


def test_renal_card_uses_prefetched_results(client: FlaskClient) -> None:
    creat = obs("2160-0", 2.5, "mg/dL", RECENT)
    weight = obs("29463-7", 60, "kg", RECENT)
    body = hook_call(b.order(b.dosage(20, frequency=3)),
                     patient=b.patient(birth_date=OLD, gender="female"),
                     prefetch={"creatinine": searchset(creat), "weight": searchset(weight)})
    got = cards(post(client, body))
    assert any(topic(c).startswith(("renal.", "geriatric.")) for c in got), topics(got)


# --- order-select, medication-prescribe --------------------------------------------------

def test_order_select_checks_only_the_selections_and_is_preliminary(client: FlaskClient) -> None:
    chosen = b.order(b.dosage(40, frequency=3), id="sel")
    other = b.order(b.dosage(40, frequency=4), id="not-selected")
    body = hook_call(chosen, other, service=SELECT, selections=["MedicationRequest/sel"],
                     patient=b.patient())
    got = cards(post(client, body, SELECT))
    issues = [c["extension"][EXT] for c in got if topic(c) != "low-findings"]
    assert issues and all(di["status"] == "preliminary" for di in issues)
    refs = {i["reference"] for di in issues for i in di["implicated"]}
    assert refs == {"MedicationRequest/sel"}


def test_order_select_skips_unverifiable_dose(client: FlaskClient) -> None:
    vague = b.order({"text": "baclofen as directed"})
    select = cards(post(client, hook_call(vague, service=SELECT, patient=b.patient()), SELECT))
    sign = cards(post(client, hook_call(vague, patient=b.patient())))
    assert "order.unverifiable-dose" not in rules_in(select)
    assert "order.unverifiable-dose" in rules_in(sign)


def test_order_select_selection_missing_from_draft_orders_is_412(client: FlaskClient) -> None:
    body = hook_call(b.order(id="a"), service=SELECT, selections=["MedicationRequest/zzz"])
    resp = post(client, body, SELECT)
    assert resp.status_code == 412
    oo = resp.get_json()
    assert oo["resourceType"] == "OperationOutcome"
    assert "MedicationRequest/zzz" in oo["issue"][0]["diagnostics"]


@pytest.mark.parametrize("shape", ["bundle", "array"], ids=["medications_bundle",
                                                              "medications_array"])
def test_medication_prescribe(client: FlaskClient, shape: str) -> None:
    body = hook_call(b.order(b.dosage(40, frequency=3)), service=PRESCRIBE, patient=b.patient())
    if shape == "array":
        body["context"]["medications"] = [e["resource"]
                                          for e in body["context"]["medications"]["entry"]]
    got = cards(post(client, body, PRESCRIBE))
    assert "oral.max-daily" in topics(got)


def test_non_r4_shapes_are_normalised(client: FlaskClient) -> None:
    stu3 = b.order()
    stu3.pop("intent")
    stu3["dosageInstruction"] = [{
        "doseQuantity": {"value": 40, "unit": "mg", "system": b.UCUM, "code": "mg"},
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}}]
    as_object = b.order(id="ord-2")
    as_object["dosageInstruction"] = [{
        "doseAndRate": {"doseQuantity": {"value": 40, "unit": "mg", "system": b.UCUM,
                                         "code": "mg"}},
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}}]
    body = hook_call(stu3, as_object, patient=b.patient())
    del body["context"]["draftOrders"]["type"]
    got = cards(post(client, body))
    daily = [c for c in got if topic(c) == "oral.max-daily"]
    assert len(daily) == 2
    assert all("120 mg/day" in c["summary"] for c in daily)


def test_fixture_order_sign_call(client: FlaskClient) -> None:
    body = json.loads((FIXTURES / "cds-order-sign.json").read_text())
    got = cards(post(client, body))
    assert "oral.max-daily" in topics(got)


# --- the corrected order passes ---------------------------------------------------------

CORRECTABLE = [
    pytest.param(b.dosage(40, frequency=3), b.patient(), id="oral.max-daily_120mg"),
    pytest.param(b.dosage(30, frequency=4), b.patient(), id="oral.max-daily_120mg_qid"),
    pytest.param(b.dosage(60, frequency=2), b.patient(), id="oral.max-daily_plus_single"),
    pytest.param(b.dosage(30, frequency=2), b.patient(), id="oral.max-single_30mg_bid"),
    pytest.param(b.dosage(3, unit="tablet", frequency=4,
                          asNeededBoolean=True), b.patient(), id="oral.max-daily_prn_tablets"),
    pytest.param(b.dosage(20, frequency=3), b.patient(birth_date="2019-01-01"),
                 id="pediatric_cap_age_7"),
]


IT_ROUTE = {"coding": [{"system": b.SNOMED, "code": "72607000", "display": "Intrathecal"}]}
IT_CONCEPT = {"coding": [{"system": b.RXNORM, "code": "1292", "display": "baclofen"}],
              "text": "baclofen 2000 MCG/ML Injection"}


def it_dose(value: float, unit: str = "ug", **repeat: Any) -> dict[str, Any]:
    d = b.dosage(value, unit, None, route=IT_ROUTE)
    d["timing"] = {"repeat": repeat}
    return d


INTRATHECAL = [
    pytest.param(it_dose(150, count=1), id="intrathecal.bolus_150ug"),
    pytest.param(it_dose(0.5, "mg", frequency=1, period=1, periodUnit="d"),
                 id="intrathecal.mg-unit_0_5mg"),
]


def _corrected_pass(client: FlaskClient, order: dict[str, Any], pat: dict[str, Any]) -> int:
    got = cards(post(client, hook_call(order, patient=pat)))
    with_suggestion = [c for c in got if c.get("suggestions")]
    assert with_suggestion, topics(got)
    checked = 0
    for card in with_suggestion:
        assert card["selectionBehavior"] == "at-most-one"
        issues = card["extension"][EXT]
        card_rules = [di["identifier"][0]["value"]
                      for di in (issues if isinstance(issues, list) else [issues])]
        for suggestion in card["suggestions"]:
            assert suggestion["isRecommended"] is True and suggestion["uuid"]
            corrected = suggestion["actions"][0]["resource"]
            assert corrected["id"] == order["id"] and corrected["status"] == "draft"
            assert corrected["medicationCodeableConcept"] == order["medicationCodeableConcept"]
            assert corrected["subject"] == order["subject"]
            again = rules_in(cards(post(client, hook_call(corrected, patient=pat))))
            fixed = [r for r in card_rules if r not in again]
            assert fixed, (card_rules, again, corrected["dosageInstruction"])
            checked += 1
    return checked


@pytest.mark.parametrize(("dose", "pat"), CORRECTABLE)
def test_each_corrected_order_passes_without_that_finding(
        client: FlaskClient, dose: dict[str, Any], pat: dict[str, Any]) -> None:
    assert _corrected_pass(client, b.order(dose), pat) >= 1


@pytest.mark.parametrize("dose", INTRATHECAL)
def test_each_corrected_intrathecal_order_passes(client: FlaskClient,
                                                 dose: dict[str, Any]) -> None:
    order = b.order(dose, concept=IT_CONCEPT)
    assert _corrected_pass(client, order, b.patient()) == 1


def test_corrected_bolus_stays_a_single_dose_in_micrograms(client: FlaskClient) -> None:
    order = b.order(it_dose(150, count=1), concept=IT_CONCEPT)
    got = cards(post(client, hook_call(order, patient=b.patient())))
    card = next(c for c in got if topic(c) == "intrathecal.bolus")
    dosage = card["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"][0]
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 100
    assert dosage["doseAndRate"][0]["doseQuantity"]["code"] == "ug"
    assert dosage["timing"] == {"repeat": {"count": 1}}
    assert dosage["route"] == IT_ROUTE


def test_corrected_order_keeps_everything_else() -> None:
    order = b.order(b.dosage(40, frequency=3, route={"text": "oral"},
                             timing={"repeat": {"frequency": 3, "period": 1, "periodUnit": "d",
                                                "boundsPeriod": {"start": "2026-11-25"}},
                                     "code": {"text": "TID"}}),
                    note=[{"text": "keep"}])
    new = corrected_order(order, Correction(Fraction(5, 2), Fraction(4), "2.5 mg four times"),
                          None)
    dosage = new["dosageInstruction"][0]
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 2.5
    assert dosage["timing"] == {"repeat": {"boundsPeriod": {"start": "2026-11-25"},
                                           "frequency": 4, "period": 1, "periodUnit": "d"}}
    assert dosage["route"] == {"text": "oral"}
    assert new["note"] == [{"text": "keep"}]
    assert order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 40


# --- prefetch: null, OperationOutcome, omitted ----------------------------------------------

def _request(body: dict[str, Any]) -> Any:
    service = SERVICES[SIGN]
    call = parse_call(body, service)
    data = gather(call, prefetch_templates(load()), None)
    return from_hook(call, data, datetime(2026, 11, 25, 10, tzinfo=UTC), "us")


def test_null_prefetch_means_nothing_there() -> None:
    req = _request(hook_call(b.order(), patient=b.patient()))
    assert req.unavailable == []
    assert req.hook == "order-sign" and req.mode == "order"


def test_operation_outcome_prefetch_is_unavailable_and_not_fetched() -> None:
    failed = {"resourceType": "OperationOutcome",
              "issue": [{"severity": "error", "code": "timeout"}]}
    req = _request(hook_call(b.order(), patient=b.patient(),
                             prefetch={"creatinine": failed, "medicationRequests": failed}))
    assert req.unavailable == ["creatinine", "medicationRequests"]


def test_omitted_keys_without_fhir_server_are_unavailable() -> None:
    body = hook_call(b.order(), empty_prefetch=False)
    req = _request(body)
    assert req.unavailable[0] == "patient"
    assert set(req.unavailable) == set(prefetch_templates(load()))
    assert req.patient.ref == "Patient/pat-1"


def test_prefetched_context_is_deduplicated_and_indexed() -> None:
    active = b.order(b.dosage(10), id="old", status="active")
    med = {"resourceType": "Medication", "id": "m1", "code": b.baclofen_concept()}
    req = _request(hook_call(b.order(), patient=b.patient(), prefetch={
        "medicationRequests": searchset(active, med, active)}))
    refs = [it.ref for it in req.context]
    assert refs.count("MedicationRequest/old") == 1
    assert req.resolve({"reference": "Medication/m1"}) == med


# --- errors -------------------------------------------------------------------------------

def _bad(mutate: Any) -> dict[str, Any]:
    body = hook_call(b.order(), patient=b.patient())
    mutate(body)
    return body


BAD = [
    pytest.param(lambda x: x.update(hook="order-select"), "hook", id="wrong_hook"),
    pytest.param(lambda x: x.pop("hookInstance"), "hookInstance", id="no_hookInstance"),
    pytest.param(lambda x: x.pop("context"), "context", id="no_context"),
    pytest.param(lambda x: x["context"].pop("patientId"), "context.patientId",
                 id="no_patientId"),
    pytest.param(lambda x: x["context"].pop("draftOrders"), "context.draftOrders",
                 id="no_draftOrders"),
    pytest.param(lambda x: x["context"].update(draftOrders=[]), "context.draftOrders",
                 id="draftOrders_not_bundle"),
    pytest.param(lambda x: x.update(prefetch=[]), "prefetch", id="prefetch_not_object"),
    pytest.param(lambda x: x["prefetch"].update(patient="Patient/1"), "prefetch.patient",
                 id="prefetch_value_not_resource"),
    pytest.param(lambda x: x.update(fhirServer="ftp://x"), "fhirServer", id="bad_fhirServer"),
    pytest.param(lambda x: x.update(fhirAuthorization={"access_token": "t"}),
                 "fhirAuthorization", id="authorization_without_server"),
]


@pytest.mark.parametrize(("mutate", "expression"), BAD)
def test_malformed_call_is_400(client: FlaskClient, mutate: Any, expression: str) -> None:
    resp = post(client, _bad(mutate))
    assert resp.status_code == 400
    oo = resp.get_json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0]["expression"] == [expression]


def test_invalid_order_is_400_naming_the_field(client: FlaskClient) -> None:
    bad = b.order()
    bad["status"] = "not-a-status"
    resp = post(client, hook_call(bad, patient=b.patient()))
    assert resp.status_code == 400
    assert "status" in json.dumps(resp.get_json())


def test_order_for_another_patient_is_400(client: FlaskClient) -> None:
    other = b.order(subject={"reference": "Patient/someone-else"})
    resp = post(client, hook_call(other, patient=b.patient()))
    assert resp.status_code == 400


def test_bad_json_is_400(client: FlaskClient) -> None:
    resp = client.post(f"/cds-services/{SIGN}", data=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.get_json()["resourceType"] == "OperationOutcome"


def test_unknown_service_is_404(client: FlaskClient) -> None:
    resp = post(client, hook_call(b.order()), "no-such-service")
    assert resp.status_code == 404
    assert resp.get_json()["issue"][0]["code"] == "not-found"


def test_calls_are_stateless(client: FlaskClient) -> None:
    order = b.order(b.dosage(40, frequency=3))
    select = cards(post(client, hook_call(order, service=SELECT, patient=b.patient()), SELECT))
    sign1 = cards(post(client, hook_call(order, patient=b.patient())))
    sign2 = cards(post(client, hook_call(order, patient=b.patient())))
    assert "oral.max-daily" in topics(select)
    assert topics(sign1) == topics(sign2) and "oral.max-daily" in topics(sign1)
    assert {c["uuid"] for c in sign1}.isdisjoint({c["uuid"] for c in sign2})


def test_prefetch_is_not_changed_by_the_service(client: FlaskClient) -> None:
    body = hook_call(b.order(b.dosage(40, frequency=3)), patient=b.patient())
    before = copy.deepcopy(body)
    _request(body)
    assert body == before


def test_fixture_legacy_medication_prescribe_array(client: FlaskClient) -> None:
    body = json.loads((FIXTURES / "cds-medication-prescribe-array.json").read_text())
    got = cards(post(client, body, PRESCRIBE))
    card = next(c for c in got if topic(c) == "oral.max-daily")
    assert "120 mg/day" in card["summary"]
    assert "3 tablet" in card["detail"] and "120 mg/day" in card["detail"]


def test_fixture_order_select_reads_only_the_selection(client: FlaskClient) -> None:
    body = json.loads((FIXTURES / "cds-order-select.json").read_text())
    got = cards(post(client, body, SELECT))
    text = json.dumps(got)
    assert "sel-1" not in text
    assert "order.unverifiable-dose" not in rules_in(got)
    assert all(c["indicator"] == "info" for c in got)


def test_legacy_medications_without_a_medication_request_is_400(client: FlaskClient) -> None:
    body = hook_call(b.order(), service=PRESCRIBE, patient=b.patient())
    body["context"]["medications"] = [{"resourceType": "MedicationOrder", "id": "dstu2"}]
    resp = post(client, body, PRESCRIBE)
    assert resp.status_code == 400
    assert "MedicationOrder" in resp.get_json()["issue"][0]["diagnostics"]


def test_order_sign_with_no_medication_order_answers_no_cards(client: FlaskClient) -> None:
    lab = {"resourceType": "ServiceRequest", "id": "lab-1", "status": "draft",
           "intent": "order", "subject": {"reference": "Patient/pat-1"},
           "code": {"text": "Basic metabolic panel"}}
    body = hook_call(patient=b.patient())
    body["context"]["draftOrders"]["entry"] = [{"resource": lab}]
    assert cards(post(client, body)) == []


@pytest.mark.parametrize("status", ["stopped", "cancelled", "completed"])
def test_order_that_is_not_checked_says_so(client: FlaskClient, status: str) -> None:
    order = b.order(b.dosage(40, frequency=3), status=status)
    got = cards(post(client, hook_call(order, patient=b.patient())))
    assert [topic(c) for c in got] == ["not-checked"]
    (card,) = got
    assert card["indicator"] == "info" and card["uuid"]
    assert status in card["summary"] and len(card["summary"]) < 140
    assert "extension" not in card


@pytest.mark.parametrize("dose", [
    pytest.param(b.dosage(500, unit="ug", frequency=3), id="units.oral-microgram_500ug"),
    pytest.param(it_dose(150, count=1), id="intrathecal.bolus_150ug"),
    pytest.param(it_dose(60, unit="ug", frequency=24, period=1, periodUnit="d"),
                 id="intrathecal_hourly_ug"),
])
def test_card_text_never_says_ug(client: FlaskClient, dose: dict[str, Any]) -> None:
    concept = IT_CONCEPT if dose.get("route") == IT_ROUTE else None
    got = cards(post(client, hook_call(b.order(dose, concept=concept), patient=b.patient())))
    assert got
    for card in got:
        for text in (card["summary"], card["detail"]):
            assert not re.search(r"\b(ug|\u00b5g)\b", text), text
            assert not re.search(r"\d\.\d*0 (mg|micrograms)\b", text), text


def test_interacting_draft_with_active_baclofen_from_prefetch(client: FlaskClient) -> None:
    baclofen = b.order(b.dosage(10), id="bac-active", status="active",
                       authoredOn="2026-09-01T09:00:00Z")
    oxy = b.order(b.dosage(5), id="oxy-draft",
                  concept={"coding": [{"system": b.RXNORM, "code": "7804",
                                       "display": "oxycodone"}],
                           "text": "oxycodone 5 MG Oral Tablet"})
    body = hook_call(oxy, service=SELECT, patient=b.patient(),
                     prefetch={"medicationRequests": searchset(baclofen)})
    got = cards(post(client, body, SELECT))
    card = next(c for c in got if topic(c) == "interaction.opioid")
    assert card["indicator"] == "warning"
    di = card["extension"][EXT]
    assert di["status"] == "preliminary"
    assert di["implicated"][0]["reference"] == "MedicationRequest/oxy-draft"
    assert "MedicationRequest/bac-active" in [i["reference"] for i in di["implicated"]]


def test_order_text_cannot_inject_markup_into_the_detail(client: FlaskClient) -> None:
    order = b.order(b.dosage(10, unit="<img src=x onerror=alert(1)>", frequency=3))
    got = cards(post(client, hook_call(order, patient=b.patient())))
    (card,) = [c for c in got if topic(c) == "low-findings"]

    assert not re.search(r"(?<!\\)<img", card["detail"])
    assert "\\<img src=x onerror=alert(1)\\>" in card["detail"]


def test_search_bundle_with_an_error_outcome_is_unavailable() -> None:
    bundle = searchset(b.order(b.dosage(10), id="old", status="active"))
    bundle["entry"].append({"search": {"mode": "outcome"}, "resource": {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "too-costly",
                   "diagnostics": "too many results"}]}})
    warn = searchset()
    warn["entry"] = [{"search": {"mode": "outcome"}, "resource": {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "informational"}]}}]
    req = _request(hook_call(b.order(), patient=b.patient(),
                             prefetch={"medicationRequests": bundle, "conditions": warn}))
    assert req.unavailable == ["medicationRequests"]
    assert "MedicationRequest/old" in [it.ref for it in req.context]
