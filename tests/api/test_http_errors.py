"""Every error status of the FHIR endpoint, through HTTP (interfaces.md section 2)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from service import create_app
from tests.support.builders import bundle, dosage, order, outcome, parameters, patient
from tests.support.checks import AUTH, TOKEN, WRITE_TOKEN
from tests.support.fhir_validate import validate

CHECK = "/MedicationRequest/$check"
FHIR = {"Content-Type": "application/fhir+json"}


def post_raw(client: FlaskClient, data: str | bytes, headers: dict[str, str] | None = None
             ) -> Any:
    return client.post(CHECK, data=data, headers={**FHIR, **AUTH, **(headers or {})})


def assert_outcome(resp: Any, status: int, code: str, words: str,
                   expression: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/fhir+json"
    body = resp.get_json()

    validate(body)
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    assert issue["code"] == code
    assert words in issue["diagnostics"]
    if expression is not None:
        assert issue["expression"] == [expression]
    return body


RAW_BODIES = [
    pytest.param("{", "invalid", "malformed JSON", id="malformed-json"),
    pytest.param('{"resourceType": "Parameters", "parameter": [],}', "invalid", "malformed JSON",
                 id="trailing-comma"),
    pytest.param('{"resourceType": "Parameters", "x": NaN}', "invalid", "NaN",
                 id="nan"),
    pytest.param('{"resourceType": "Parameters", "x": Infinity}', "invalid", "Infinity",
                 id="infinity"),
    pytest.param('{"resourceType": "Parameters", "x": -Infinity}', "invalid", "Infinity",
                 id="minus-infinity"),
    pytest.param('{"resourceType": "Parameters", "x": 1e309}', "invalid", "1e309",
                 id="number-out-of-range"),
    pytest.param("", "invalid", "empty", id="empty-body"),
    pytest.param(b"\xff\xfe{", "invalid", "", id="not-utf8"),
    pytest.param("[1, 2]", "structure", "JSON object", id="not-an-object"),
    pytest.param('"Parameters"', "structure", "JSON object", id="a-string"),
    pytest.param('{"parameter": []}', "structure", "resourceType", id="no-resource-type"),
    pytest.param('{"resourceType": "Prescription"}', "structure", "Prescription",
                 id="unknown-resource-type"),
    pytest.param("[" * 5000 + "]" * 5000, "invalid", "nested", id="nested-too-deep"),
]


@pytest.mark.parametrize(("data", "code", "words"), RAW_BODIES)
def test_bad_json_is_400(client, data, code, words):
    assert_outcome(post_raw(client, data), 400, code, words)


def _left_out(resp: Any, expression: str) -> tuple[list[str], dict[str, Any]]:
    """(rule ids, the information issue naming ``expression``) of a 200 result."""
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    rules = [e["resource"]["identifier"][0]["value"] for e in body["entry"]
             if e["resource"]["resourceType"] == "DetectedIssue"]
    issues = [i for e in body["entry"] if e["resource"]["resourceType"] == "OperationOutcome"
              for i in e["resource"]["issue"] if i.get("expression") == [expression]]
    assert len(issues) == 1, body
    return rules, issues[0]


def test_invalid_dose_value_is_left_out_and_the_dose_is_unverifiable(client):
    """Issue 13: an invalid element a rule needs is not a 400; the dose rules say the dose
    could not be checked (fail closed) and an information issue names the element."""
    body = parameters(order(dosage("abc", "mg", 3)))
    resp = post_raw(client, json.dumps(body))
    path = "MedicationRequest.dosageInstruction[0].doseAndRate[0].doseQuantity.value"
    rules, issue = _left_out(resp, path)
    assert rules == ["order.unverifiable-dose"]
    assert issue["severity"] == "information" and issue["code"] == "informational"
    assert issue["diagnostics"].startswith(f"order 1: {path} left out")
    assert "dose and schedule of dosageInstruction[0] were not read" in issue["diagnostics"]


def test_unknown_order_property_is_left_out_and_named(client):
    resp = post_raw(client, json.dumps(parameters(order(dosageText="10 mg"))))
    rules, issue = _left_out(resp, "MedicationRequest.dosageText")
    assert rules == ["oral.start-dose"]  # the builder's 10 mg three times a day, as without it
    assert "Extra inputs are not permitted" in issue["diagnostics"]


def test_invalid_order_status_is_still_400(client):
    resp = post_raw(client, json.dumps(parameters(order(status=5))))
    assert_outcome(resp, 400, "structure", "MedicationRequest.status", "MedicationRequest.status")


def test_invalid_patient_names_the_field(client):
    resp = post_raw(client, json.dumps(parameters(order(), pat=patient(birth_date="03/14/1968"))))
    assert_outcome(resp, 400, "structure", "Patient.birthDate", "Patient.birthDate")


def test_a_resource_that_is_not_checkable_is_422(client):
    resp = post_raw(client, json.dumps(patient()))
    assert_outcome(resp, 422, "not-supported", "cannot be checked")


@pytest.mark.parametrize("media_type", ["text/plain", "application/xml",
                                        "application/x-www-form-urlencoded", None])
def test_wrong_media_type_is_415(client, media_type):
    headers = dict(AUTH)
    if media_type:
        headers["Content-Type"] = media_type
    resp = client.post(CHECK, data=json.dumps(parameters(order())), headers=headers)
    assert_outcome(resp, 415, "not-supported", "media type")


@pytest.mark.parametrize("media_type", ["application/json", "application/fhir+json",
                                        "application/fhir+json; charset=utf-8",
                                        "application/json; fhirVersion=4.0"])
def test_json_media_types_are_accepted(client, media_type):
    resp = client.post(CHECK, data=json.dumps(parameters(order())),
                       headers={**AUTH, "Content-Type": media_type})
    assert resp.status_code == 200


def small_client(tmp_path: Any, limit: int) -> FlaskClient:
    app = create_app({"API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN, "CDS_REQUIRE_JWT": False,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3",
                      "MAX_REQUEST_BYTES": limit})
    return app.test_client()


def test_too_large_is_413(tmp_path):
    client = small_client(tmp_path, 2000)
    body = json.dumps(parameters(order(), context=[
        order(id=f"old-{n}", status="completed") for n in range(10)]))
    assert len(body) > 2000
    assert_outcome(post_raw(client, body), 413, "too-costly", "2000")


def test_just_under_the_limit_is_checked(tmp_path):
    body = json.dumps(parameters(order()))
    client = small_client(tmp_path, len(body.encode()))
    assert post_raw(client, body).status_code == 200


def test_no_credentials_is_401(client):
    resp = client.post(CHECK, data=json.dumps(parameters(order())), headers=FHIR)
    assert_outcome(resp, 401, "login", "bearer token")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer",
                                    f"Token {TOKEN}"])
def test_bad_credentials_are_401(client, header):
    resp = client.post(CHECK, data=json.dumps(parameters(order())),
                       headers={**FHIR, "Authorization": header})
    assert_outcome(resp, 401, "login", "token")


def test_credentials_checked_before_the_body(client):
    resp = client.post(CHECK, data="{", headers=FHIR)
    assert resp.status_code == 401


def test_persist_without_write_is_403(client):
    resp = client.post("/MedicationRequest/ord-1/$check?persist=true", headers=AUTH)
    assert_outcome(resp, 403, "forbidden", "write")


def test_persist_with_a_write_token_is_not_403(client):
    resp = client.post("/MedicationRequest/ord-1/$check?persist=true",
                       headers={"Authorization": f"Bearer {WRITE_TOKEN}"})
    assert resp.status_code != 403
    assert resp.get_json()["resourceType"] == "OperationOutcome" or resp.status_code == 200


def test_unknown_path_is_404(client):
    resp = client.get("/Patient/123", headers=AUTH)
    assert_outcome(resp, 404, "not-found", "/Patient/123")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_on_check_is_405(client, method):
    resp = client.open(CHECK, method=method, headers=AUTH)
    assert_outcome(resp, 405, "not-supported", method)
    assert "POST" in resp.headers["Allow"]


UNPROCESSABLE = [
    pytest.param({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "resource": patient()}]}, "no MedicationRequest",
        "Parameters.parameter.where(name='order')", id="parameters-without-order"),
    pytest.param({"resourceType": "Parameters", "parameter": [
        {"name": "order", "resource": order()}]}, "no patient",
        "Parameters.parameter.where(name='patient')", id="parameters-without-patient"),
    pytest.param({"resourceType": "Parameters", "parameter": [
        {"name": "order", "resource": order()}, {"name": "patient", "resource": patient()},
        {"name": "patient", "resource": patient(id="pat-2")}]}, "more than one patient",
        "Parameters.parameter.where(name='patient')", id="parameters-with-two-patients"),
    pytest.param(bundle(order()), "exactly one Patient", None, id="bundle-without-patient"),
    pytest.param(bundle(patient(), patient(id="pat-2"), order()), "exactly one Patient", None,
                 id="bundle-with-two-patients"),
    pytest.param(bundle(patient(), order(status="completed"),
                        order(id="ibu", status="active", concept={"text": "ibuprofen"})),
                 "nothing to check", None, id="bundle-no-draft-no-active-baclofen"),
    pytest.param(parameters(order(subject={"reference": "Patient/someone-else"})),
                 "Patient/someone-else", "MedicationRequest.subject",
                 id="order-for-another-patient"),
]


@pytest.mark.parametrize(("body", "words", "expression"), UNPROCESSABLE)
def test_valid_fhir_that_cannot_be_checked_is_422(client, body, words, expression):
    resp = post_raw(client, json.dumps(body))
    out = assert_outcome(resp, 422, resp.get_json()["issue"][0]["code"], words, expression)
    assert out["issue"][0]["code"] in {"processing", "required", "not-found", "not-supported"}


def test_non_baclofen_draft_is_200_information(client):
    body = parameters(order(concept={"text": "tizanidine 4 mg tablet"}))
    resp = post_raw(client, json.dumps(body))
    assert resp.status_code == 200
    result = resp.get_json()
    [entry] = result["entry"]
    assert entry["resource"]["resourceType"] == "OperationOutcome"
    assert entry["resource"]["issue"][0]["severity"] == "information"


def test_unusable_context_is_200_with_a_warning_naming_it(client):
    body = parameters(order(), context=[{"resourceType": "Condition", "id": "cond-9",
                                         "subject": {"reference": "Patient/pat-1"}}])
    resp = post_raw(client, json.dumps(body))
    assert resp.status_code == 200
    oo = outcome(resp.get_json())
    assert oo is not None
    issue = oo["issue"][0]
    assert issue["severity"] == "warning"
    assert "Condition/cond-9" in issue["diagnostics"]


def test_profile_query_parameter_must_be_known(client):
    resp = client.post(CHECK + "?profile=fr", data=json.dumps(parameters(order())),
                       headers={**FHIR, **AUTH})
    assert_outcome(resp, 400, "invalid", "profile")


def test_auth_off_allows_anonymous_calls(tmp_path):
    app = create_app({"API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3"})
    resp = app.test_client().post(CHECK, data=json.dumps(parameters(order(dosage(30, "mg", 4)))),
                                  headers=FHIR)
    assert resp.status_code == 200
