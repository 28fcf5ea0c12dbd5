"""Input: Parameters and Bundle shapes, normalisation, references, context skipping
(interfaces.md section 2; clinical-rules section 1)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.assemble.native import parse_body
from service.assemble.normalise import normalise_dosage, normalise_resource
from service.checker import check_body
from service.errors import ServiceError
from service.knowledge import load
from tests.support.builders import bundle, dosage, issues, order, outcome, parameters, patient
from tests.support.checks import found, found_ids, post_check
from tests.support.fhir_validate import validate
from tests.support.fixtures import fixture

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def implicated(di: dict[str, Any]) -> list[str]:
    return [r["reference"] for r in di["implicated"]]


# --- fixtures end to end through HTTP ------------------------------------------------------

FIXTURE_CASES = [
    pytest.param("params-overdose.json",
                 [("oral.max-daily", "high"), ("oral.max-single", "moderate")],
                 "MedicationRequest/mr-overdose", id="params-overdose"),
    pytest.param("bundle-transaction-urn.json",
                 [("oral.max-daily", "moderate"), ("oral.max-single", "moderate")],
                 "urn:uuid:0b7d4f2e-6c1a-4e8b-9f3d-000000000003", id="transaction-urn-uuid"),
    pytest.param("bundle-searchset-outcome.json",
                 [("oral.frequency", "low"), ("oral.max-single", "moderate"),
                  ("oral.probable-error", "high")],
                 "MedicationRequest/mr-2002", id="searchset-with-outcome-entry"),
    pytest.param("params-stu3-order.json",
                 [("oral.frequency", "low"), ("oral.max-single", "moderate")],
                 "MedicationRequest/mr-stu3", id="stu3-order"),
    pytest.param("bundle-review.json",
                 [("oral.max-daily", "moderate"), ("oral.max-single", "moderate")],
                 "MedicationRequest/mr-3003", id="review-mode"),
    pytest.param("params-liquid-duplicate.json",
                 [("oral.duplicate", "moderate"), ("units.liquid-volume", "moderate")],
                 "MedicationRequest/mr-liquid", id="liquid-and-duplicate"),
    pytest.param("params-microgram.json", [("units.oral-microgram", "high")],
                 "MedicationRequest/mr-ug", id="microgram"),
]


@pytest.mark.parametrize(("name", "expected", "order_ref"), FIXTURE_CASES)
def test_fixture_through_http(client, name, expected, order_ref):
    resp = post_check(client, fixture(name))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    result = resp.get_json()
    validate(result)
    assert result["type"] == "collection"
    assert found(result) == expected
    for di in issues(result):
        assert implicated(di)[0] == order_ref


def test_search_outcome_entry_is_not_context(client):
    result = post_check(client, fixture("bundle-searchset-outcome.json")).get_json()
    # the OperationOutcome of the search is neither context nor a skipped-resource warning
    assert outcome(result) is None


def test_non_baclofen_fixture_is_information(client):
    resp = post_check(client, fixture("params-not-baclofen.json"))
    assert resp.status_code == 200
    result = resp.get_json()
    validate(result)
    assert issues(result) == []
    oo = outcome(result)
    assert oo is not None
    assert [i["severity"] for i in oo["issue"]] == ["information"]
    assert "no baclofen order" in oo["issue"][0]["diagnostics"]


# --- normalisation -------------------------------------------------------------------------

def test_stu3_dose_fields_move_into_dose_and_rate():
    d = {"doseQuantity": {"value": 5, "unit": "mg"}, "rateRatio": {"numerator": {"value": 1}}}
    normalise_dosage(d)
    assert d == {"doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"},
                                  "rateRatio": {"numerator": {"value": 1}}}]}


def test_r4_dose_wins_over_a_stu3_dose_sent_beside_it():
    d = {"doseQuantity": {"value": 5, "unit": "mg"},
         "doseAndRate": [{"doseQuantity": {"value": 10, "unit": "mg"}}]}
    normalise_dosage(d)
    assert d["doseAndRate"][0] == {"doseQuantity": {"value": 10, "unit": "mg"}}


def test_dose_and_rate_object_becomes_a_list():
    d = {"doseAndRate": {"doseQuantity": {"value": 5}}}
    normalise_dosage(d)
    assert d == {"doseAndRate": [{"doseQuantity": {"value": 5}}]}


def test_missing_intent_and_bundle_type_and_offsets_are_filled():
    o = order()
    del o["intent"]
    o["authoredOn"] = "2026-11-25T08:00"
    b = {"resourceType": "Bundle", "entry": [{"resource": o}]}
    normalise_resource(b, "+02:00")
    normalise_resource(o, "+02:00")
    assert b["type"] == "collection"
    assert o["intent"] == "order"
    assert o["authoredOn"] == "2026-11-25T08:00:00+02:00"


def test_dates_with_offset_and_plain_dates_are_left_alone():
    o = order(authoredOn="2026-11-25T08:00:00-05:00")
    o["dispenseRequest"] = {"validityPeriod": {"start": "2026-11-25"}}
    normalise_resource(o, "+02:00")
    assert o["authoredOn"] == "2026-11-25T08:00:00-05:00"
    assert o["dispenseRequest"]["validityPeriod"]["start"] == "2026-11-25"


def test_order_without_intent_and_stu3_dose_is_checked():
    o = order()
    del o["intent"]
    o["dosageInstruction"] = [{"doseQuantity": {"value": 30, "unit": "mg"},
                               "timing": {"repeat": {"frequency": 4, "period": 1,
                                                     "periodUnit": "d"}}}]
    result, _req, _out = check_body(parameters(o), NOW, "us", load())
    validate(result)
    assert found_ids(result) == ["oral.max-daily", "oral.max-single"]


def test_parameters_check_time_and_profile():
    body = parameters(order(dosage(22.5, "mg", 4)), check_time="2026-11-24T08:00:00+05:30",
                      profile="uk")
    req = parse_body(body, NOW, "us", load())
    assert req.check_time == datetime(2026, 11, 24, 2, 30, tzinfo=UTC)
    assert req.check_time.utcoffset() == timedelta(hours=5, minutes=30)
    assert req.profile == "uk"


def test_parameters_check_time_defaults_to_now():
    body = parameters(order())
    body["parameter"] = [p for p in body["parameter"] if p["name"] != "checkTime"]
    assert parse_body(body, NOW, "us", load()).check_time == NOW


def test_input_is_not_modified():
    body = fixture("params-stu3-order.json")
    before = copy.deepcopy(body)
    parse_body(copy.deepcopy(body), NOW, "us", load())
    assert body == before


# --- Bundles -------------------------------------------------------------------------------

def test_bundle_drafts_are_the_orders_everything_else_context():
    b = bundle(patient(), order(dosage(10, "mg", 3)),
               order(dosage(20, "mg", 3), id="old", status="active"))
    req = parse_body(b, NOW, "us", load())
    assert [o.ref for o in req.orders] == ["MedicationRequest/ord-1"]
    assert req.mode == "order"
    assert [c.ref for c in req.context] == ["MedicationRequest/old"]


def test_review_mode_checks_active_baclofen_orders_only():
    other = order(dosage(1, "tablet", 3), id="ibu", status="active",
                  concept={"text": "ibuprofen 400 mg tablet"})
    b = bundle(patient(), order(dosage(30, "mg", 4), status="active"), other,
               order(dosage(10, "mg", 3), id="done", status="completed"))
    req = parse_body(b, NOW, "us", load())
    assert req.mode == "review"
    assert [o.ref for o in req.orders] == ["MedicationRequest/ord-1"]


def test_bundle_without_type_is_accepted():
    result, _req, _out = check_body(bundle(patient(), order(dosage(30, "mg", 4)), type_=None),
                                    NOW, "us", load())
    validate(result)
    assert "oral.max-daily" in found_ids(result)


def test_the_same_patient_twice_by_the_same_reference_is_one_patient():
    b = bundle(patient(), order())
    b["entry"].append({"fullUrl": "https://x.example/Patient/pat-1", "resource": patient()})
    assert parse_body(b, NOW, "us", load()).patient is not None


def test_contained_medication_resolves_by_hash_id():
    o = order(dosage(2, "tablet", 3))
    del o["medicationCodeableConcept"]
    o["contained"] = [{"resourceType": "Medication", "id": "m1",
                       "code": {"text": "baclofen 10 MG Oral Tablet"}}]
    o["medicationReference"] = {"reference": "#m1"}
    result, _req, outcome_ = check_body(parameters(o), NOW, "us", load())
    validate(result)
    assert outcome_.orders[0].is_baclofen
    assert outcome_.orders[0].lines[0].dose_mg == 20


def test_unresolvable_medication_reference_with_display():
    o = order(dosage(30, "mg", 4))
    del o["medicationCodeableConcept"]
    o["medicationReference"] = {"reference": "Medication/elsewhere", "display": "Baclofen 10mg"}
    result, _req, outcome_ = check_body(parameters(o), NOW, "us", load())
    validate(result)
    assert outcome_.orders[0].is_baclofen
    assert "oral.max-daily" in found_ids(result)


# --- context skipping ----------------------------------------------------------------------

SKIPPED_CONTEXT = [
    pytest.param({"resourceType": "Observation", "id": "o1", "status": "final"},
                 "Observation/o1", "Observation.code is missing", id="observation-without-code"),
    pytest.param({"resourceType": "Observation", "id": "o2", "status": "final",
                  "code": {"text": "creatinine"}, "effectiveDateTime": "last tuesday"},
                 "Observation/o2", "Observation.effectiveDateTime is not a FHIR dateTime",
                 id="observation-bad-date"),
    pytest.param({"resourceType": "MedicationDispense", "id": "d1", "status": "completed",
                  "medicationCodeableConcept": {"text": "baclofen"},
                  "whenHandedOver": "2026-13-45"},
                 "MedicationDispense/d1", "whenHandedOver", id="dispense-bad-date"),
    pytest.param({"resourceType": "MedicationStatement", "id": "s1", "status": "active",
                  "medicationCodeableConcept": {"text": "baclofen"},
                  "effectivePeriod": {"start": "soon"}},
                 "MedicationStatement/s1", "effectivePeriod", id="statement-bad-period"),
    pytest.param({"resourceType": "Condition", "id": "c1", "code": {"text": "CKD"},
                  "clinicalStatus": {"text": "active"}, "status": 3},
                 "Condition/c1", "status is not a code", id="status-not-a-code"),
    pytest.param({"resourceType": "MedicationRequest", "id": "m2", "status": "active",
                  "intent": "order"},
                 "MedicationRequest/m2", "names no medication", id="order-without-drug"),
    pytest.param({"resourceType": "MedicationRequest", "id": "m1", "status": "active",
                  "intent": "order", "subject": {"reference": "Patient/pat-1"},
                  "medicationCodeableConcept": {"text": "baclofen"}, "dosageInstruction": "x"},
                 "MedicationRequest/m1", "dosageInstruction is not a list of Dosage",
                 id="order-with-bad-dosage"),
    pytest.param({"resourceType": "Practitioner", "id": "pr1"}, "Practitioner/pr1",
                 "not a resource the checker reads", id="type-not-read"),
]


@pytest.mark.parametrize(("resource", "name", "why"), SKIPPED_CONTEXT)
def test_unusable_context_is_skipped_with_a_warning(client, resource, name, why):
    resp = post_check(client, parameters(order(dosage(30, "mg", 4)), context=[resource]))
    assert resp.status_code == 200
    result = resp.get_json()
    validate(result)
    assert "oral.max-daily" in found_ids(result)  # the order is still checked
    oo = outcome(result)
    assert oo is not None
    warning = [i for i in oo["issue"] if name in i["diagnostics"]]
    assert len(warning) == 1
    assert warning[0]["severity"] == "warning"
    assert why in warning[0]["diagnostics"]


def test_skipped_bundle_context_names_the_entry():
    b = bundle(patient(), order(dosage(30, "mg", 4)),
               {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/pat-1"}})
    result, _req, _out = check_body(b, NOW, "us", load())
    validate(result)
    oo = outcome(result)
    assert oo is not None
    assert oo["issue"][0]["severity"] == "warning"
    assert "Condition/c1" in oo["issue"][0]["diagnostics"]
    assert oo["issue"][0]["expression"] == ["Bundle.entry[2].resource"]


def test_skipped_context_order_is_not_a_duplicate():
    bad = order(dosage(20, "mg", 3), id="m1", status="active")
    bad["dosageInstruction"] = "20 mg tid"
    result, _req, _out = check_body(parameters(order(), context=[bad]), NOW, "us", load())
    validate(result)
    assert "oral.duplicate" not in found_ids(result)


# --- what fails the request ----------------------------------------------------------------

def status_of(body: Any) -> tuple[int, str]:
    with pytest.raises(ServiceError) as err:
        parse_body(body, NOW, "us", load())
    return err.value.status, err.value.problems[0].message


@pytest.mark.parametrize(("body", "status", "words"), [
    pytest.param(parameters(order(subject={"reference": "Patient/other"})), 422, "Patient/other",
                 id="order-for-another-patient"),
    pytest.param(bundle(patient(), patient(id="p2"), order()), 422, "exactly one Patient",
                 id="bundle-two-patients"),
    pytest.param(bundle(order()), 422, "exactly one Patient", id="bundle-no-patient"),
    pytest.param(bundle(patient(), order(status="completed")), 422, "nothing to check",
                 id="bundle-nothing-to-check"),
    pytest.param({"resourceType": "Parameters"}, 422, "no MedicationRequest",
                 id="parameters-without-any-parameter"),
    pytest.param(parameters(order(status="bogus")), 400, "MedicationRequest.status",
                 id="order-status-not-a-code"),
    pytest.param(parameters(order(intent="bogus")), 400, "MedicationRequest.intent",
                 id="order-intent-not-a-code"),
    pytest.param(parameters(order(), pat=patient(gender="f")), 400, "Patient.gender",
                 id="patient-gender-not-a-code"),
    pytest.param(parameters(order(), pat=patient(birth_date="14/03/1968")), 400,
                 "Patient.birthDate", id="patient-birth-date-invalid"),
    pytest.param(parameters(order(), profile="fr"), 400, "profile", id="unknown-profile"),
    pytest.param(parameters(order(), check_time="tomorrow"), 400, "checkTime",
                 id="bad-check-time"),
    pytest.param({"resourceType": "Parameters",
                  "parameter": [{"name": "drug", "valueString": "x"}]}, 400,
                 "unknown parameter", id="unknown-parameter"),
    pytest.param(parameters(patient()), 400, "not a MedicationRequest", id="order-is-a-patient"),
])
def test_requests_that_fail(body, status, words):
    got_status, message = status_of(body)
    assert got_status == status
    assert words in message


def test_context_about_another_patient_is_skipped_with_a_warning():
    theirs = order(dosage(20, "mg", 3), id="theirs", status="active",
                   subject={"reference": "Patient/someone-else"})
    ours = order(dosage(20, "mg", 3), id="ours", status="active",
                 subject={"reference": "https://ehr.example/fhir/Patient/pat-1/_history/3"})
    result, req, _out = check_body(parameters(order(), context=[theirs, ours]), NOW, "us",
                                   load())
    validate(result)
    assert [c.ref for c in req.context] == ["MedicationRequest/ours"]
    dup = [di for di in issues(result) if di["identifier"][0]["value"] == "oral.duplicate"]
    assert [r["reference"] for r in dup[0]["implicated"]] == ["MedicationRequest/ord-1",
                                                            "MedicationRequest/ours"]
    oo = outcome(result)
    assert oo is not None
    [warning] = oo["issue"]
    assert warning["severity"] == "warning"
    assert "MedicationRequest/theirs" in warning["diagnostics"]
    assert "Patient/someone-else" in warning["diagnostics"]


def test_bundle_context_about_another_patient_is_skipped():
    b = bundle(patient(), order(dosage(10, "mg", 3)),
               order(dosage(20, "mg", 3), id="theirs", status="active",
                     subject={"reference": "Patient/p-2"}))
    result, req, _out = check_body(b, NOW, "us", load())
    validate(result)
    assert req.context == []
    assert "oral.duplicate" not in found_ids(result)


def test_non_baclofen_drafts_in_a_bundle_are_information():
    b = bundle(patient(), order(concept={"text": "tizanidine 4 mg tablet"}))
    result, _req, _out = check_body(b, NOW, "us", load())
    validate(result)
    assert issues(result) == []
    oo = outcome(result)
    assert oo is not None and oo["issue"][0]["severity"] == "information"


def test_a_skipped_bundled_medication_gives_no_strength():
    o = order(dosage(2, "tablet", 3))
    del o["medicationCodeableConcept"]
    o["medicationReference"] = {"reference": "Medication/m10", "display": "baclofen tablet"}
    bad_med = {"resourceType": "Medication", "id": "m10", "code": {"text": "baclofen"},
               "ingredient": "baclofen 10 mg per tablet"}
    result, _req, outcome_ = check_body(bundle(patient(), o, bad_med), NOW, "us", load())
    validate(result)
    assert outcome_.orders[0].lines[0].dose_mg is None
    assert found_ids(result) == ["order.unverifiable-dose"]
    oo = outcome(result)
    assert oo is not None and "Medication/m10" in oo["issue"][0]["diagnostics"]
