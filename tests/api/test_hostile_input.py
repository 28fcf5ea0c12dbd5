"""Hostile input on every endpoint (issue 7): each gets a 4xx with an OperationOutcome that
names the problem, or - for clinical data that is merely unusable - an explicit finding;
never a 5xx, never a hang."""

from __future__ import annotations

import copy
import json
import os
import pathlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import create_app
from tests.support.builders import bundle, dosage, order, parameters, patient, rule_ids
from tests.support.checks import AUTH, post_check
from tests.support.fhir_validate import validate

CDS_SIGN = "/cds-services/baclofen-order-sign"


def cds_call(draft: dict[str, Any], prefetch: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"hook": "order-sign", "hookInstance": "d1f1f1f1-0000-4000-8000-000000000001",
            "context": {"userId": "Practitioner/1", "patientId": "pat-1",
                        "draftOrders": bundle(draft)},
            "prefetch": prefetch if prefetch is not None else {"patient": patient()}}


def assert_outcome(resp: Any, status: int, words: str) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)[:500]
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    text = " ".join(i.get("diagnostics", "") for i in body["issue"]).lower()
    assert words.lower() in text, text


# --- malformed bodies on every JSON endpoint ----------------------------------------------

ENDPOINTS = ["/MedicationRequest/$check", CDS_SIGN, f"{CDS_SIGN}/feedback"]
MALFORMED = [
    ("truncated", b'{"resourceType": "Parameters", "parameter": [', "malformed json"),
    ("not_json", b"hello", "malformed json"),
    ("nan", b'{"resourceType": "Parameters", "x": NaN}', "malformed json"),
    ("infinity", b'{"resourceType": "Parameters", "x": -Infinity}', "malformed json"),
    ("overflow_1e309", b'{"resourceType": "Parameters", "x": 1e309}', "out of range"),
    ("empty", b"", "empty"),
    ("deep_nesting", b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested"),
    ("bad_utf8", b'{"resourceType": "\xff\xfe"}', "utf-8"),
]


@pytest.mark.parametrize("path", ENDPOINTS, ids=["check", "cds", "feedback"])
@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_json_is_400(client: Any, path: str, case: tuple[str, bytes, str]) -> None:
    _id, data, words = case
    resp = client.post(path, data=data, headers={"Content-Type": "application/json", **AUTH})
    assert_outcome(resp, 400, words)


@pytest.mark.parametrize("path", ENDPOINTS, ids=["check", "cds", "feedback"])
@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "multipart/form-data", ""])
def test_wrong_media_type_is_415(client: Any, path: str, ctype: str) -> None:
    headers = {**AUTH}
    if ctype:
        headers["Content-Type"] = ctype
    resp = client.post(path, data=json.dumps(parameters(order())), headers=headers)
    assert_outcome(resp, 415, "media type")


@pytest.mark.parametrize("path", ENDPOINTS, ids=["check", "cds", "feedback"])
def test_body_over_limit_is_413(tmp_path: Any, path: str) -> None:
    app = create_app({"API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False,
                      "MAX_REQUEST_BYTES": 2000,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3"})
    big = parameters(order(note=[{"text": "x" * 5000}]))
    resp = app.test_client().post(path, data=json.dumps(big),
                                  headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert resp.get_json()["resourceType"] == "OperationOutcome"


def test_ten_thousand_entry_bundle_is_answered(client: Any) -> None:
    entries = [patient()] + [order(dosage(10, "mg", 3), id="ord-1")]
    filler = [{"resourceType": "Observation", "id": f"o{i}", "status": "final",
               "subject": {"reference": "Patient/pat-1"},
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
               "valueQuantity": {"value": 70, "unit": "/min"}} for i in range(10_000)]
    resp = post_check(client, bundle(*entries, *filler))
    assert resp.status_code == 200
    validate(resp.get_json())


# --- clinical data that is merely unusable becomes a finding -----------------------------

UNUSABLE = [
    ("zero_dose", dosage(0, "mg", 3)),
    ("negative_dose", dosage(-5, "mg", 3)),
    ("zero_frequency", dosage(10, "mg", 0)),
    ("negative_period", dosage(10, "mg", 3, period=-1)),
    ("zero_period", dosage(10, "mg", 3, period=0)),
    ("unknown_period_unit", dosage(10, "mg", 3, period_unit="fortnight")),
    ("unknown_unit", dosage(10, "drops", 3)),
    ("free_text_only", {"text": "take as directed"}),
]


@pytest.mark.parametrize("case", UNUSABLE, ids=[c[0] for c in UNUSABLE])
def test_unusable_dose_is_an_explicit_finding(client: Any, case: tuple[str, Any]) -> None:
    _id, dose = case
    resp = post_check(client, parameters(order(dose)))
    if resp.status_code == 400:   # FHIR itself forbids it (e.g. a negative positiveInt)
        assert resp.get_json()["resourceType"] == "OperationOutcome"
        return
    assert resp.status_code == 200
    result = resp.get_json()
    validate(result)
    assert "order.unverifiable-dose" in rule_ids(result)


@pytest.mark.parametrize("date", ["0001-01-01", "9999-12-31", "2026-02-30", "2026-13-01",
                                  "26-11-25", "yesterday"])
def test_absurd_dates(client: Any, date: str) -> None:
    resp = post_check(client, parameters(order(authoredOn=date)))
    assert resp.status_code in (200, 400)
    body = resp.get_json()
    if resp.status_code == 400:
        assert body["resourceType"] == "OperationOutcome"
        assert "authoredOn" in json.dumps(body)
    else:
        validate(body)


def test_future_birth_date_is_not_a_crash(client: Any) -> None:
    resp = post_check(client, parameters(order(), pat=patient("2099-01-01")))
    assert resp.status_code in (200, 400)
    assert resp.get_json()["resourceType"] in ("Bundle", "OperationOutcome")


# --- references ------------------------------------------------------------------------

def test_references_that_point_nowhere_or_loop(client: Any) -> None:
    med_a = {"resourceType": "Medication", "id": "a",
             "ingredient": [{"itemReference": {"reference": "#b"}}]}
    med_b = {"resourceType": "Medication", "id": "b",
             "ingredient": [{"itemReference": {"reference": "#a"}}]}
    o = order(id="loop", medicationReference={"reference": "#a"}, contained=[med_a, med_b])
    del o["medicationCodeableConcept"]
    resp = post_check(client, parameters(o))
    assert resp.status_code in (200, 400)
    body = resp.get_json()
    if resp.status_code == 200:
        validate(body)
    nowhere = order(id="nowhere", medicationReference={"reference": "Medication/missing"})
    del nowhere["medicationCodeableConcept"]
    resp = post_check(client, parameters(nowhere))
    assert resp.status_code == 200
    # an order whose drug cannot be resolved is not silently reported as "no baclofen"
    body = resp.get_json()
    validate(body)
    issues = [i for e in body["entry"] if e["resource"]["resourceType"] == "OperationOutcome"
              for i in e["resource"]["issue"]]
    assert [i["severity"] for i in issues] == ["warning"]
    assert "cannot be identified" in issues[0]["diagnostics"]


def test_medication_reference_loop_in_bundle(client: Any) -> None:
    med = {"resourceType": "Medication", "id": "m1", "code": {"text": "baclofen 10 MG tablet"},
           "ingredient": [{"itemReference": {"reference": "Medication/m1"}}]}
    o = order(medicationReference={"reference": "Medication/m1"})
    del o["medicationCodeableConcept"]
    resp = post_check(client, bundle(patient(), o, med))
    assert resp.status_code == 200
    validate(resp.get_json())


# --- wrong JSON types in every field the checker reads (hypothesis) ------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
PATHS = [
    ("order", ["dosageInstruction"]),
    ("order", ["dosageInstruction", 0, "doseAndRate"]),
    ("order", ["dosageInstruction", 0, "doseAndRate", 0, "doseQuantity"]),
    ("order", ["dosageInstruction", 0, "doseAndRate", 0, "doseQuantity", "value"]),
    ("order", ["dosageInstruction", 0, "doseAndRate", 0, "doseQuantity", "unit"]),
    ("order", ["dosageInstruction", 0, "timing"]),
    ("order", ["dosageInstruction", 0, "timing", "repeat", "frequency"]),
    ("order", ["dosageInstruction", 0, "timing", "repeat", "period"]),
    ("order", ["dosageInstruction", 0, "timing", "repeat", "periodUnit"]),
    ("order", ["dosageInstruction", 0, "asNeededBoolean"]),
    ("order", ["dosageInstruction", 0, "route"]),
    ("order", ["dosageInstruction", 0, "sequence"]),
    ("order", ["medicationCodeableConcept"]),
    ("order", ["priorPrescription"]),
    ("order", ["status"]),
    ("order", ["authoredOn"]),
    ("order", ["subject"]),
    ("patient", ["birthDate"]),
    ("patient", ["gender"]),
    ("context", ["valueQuantity"]),
    ("context", ["code"]),
    ("context", ["effectiveDateTime"]),
    ("context", ["status"]),
]


def _set(target: Any, path: list[Any], value: Any) -> None:
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _creatinine() -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "scr", "status": "final",
            "subject": {"reference": "Patient/pat-1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
            "effectiveDateTime": "2026-11-20T08:00:00Z",
            "valueQuantity": {"value": 1.1, "unit": "mg/dL"}}


HOSTILE_APP = create_app({"API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False,
                          "DATABASE_URL": "sqlite:///:memory:"})


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(PATHS), JSON_VALUES, st.booleans())
def test_wrong_types_never_crash(where: tuple[str, list[Any]], value: Any, via_cds: bool
                                 ) -> None:
    resource_name, path = where
    o = order(dosage(10, "mg", 3))
    p = patient()
    ctx = _creatinine()
    target = {"order": o, "patient": p, "context": ctx}[resource_name]
    _set(target, copy.deepcopy(path), value)
    client = HOSTILE_APP.test_client()
    if via_cds:
        resp = client.post(CDS_SIGN, json=cds_call(o, {"patient": p, "creatinine": {
            "resourceType": "Bundle", "type": "searchset", "entry": [{"resource": ctx}]}}))
    else:
        resp = client.post("/MedicationRequest/$check", json=parameters(o, pat=p, context=[ctx]))
    assert resp.status_code in (200, 400, 412, 422), resp.get_data(as_text=True)[:300]
    body = resp.get_json()
    if resp.status_code == 200:
        if via_cds:
            assert isinstance(body["cards"], list)
        else:
            validate(body)
    else:
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("value", [["us"], {"code": "us"}, 1, None, True])
def test_profile_of_the_wrong_type_is_400(client: Any, value: Any) -> None:
    body = parameters(order())
    body["parameter"].append({"name": "profile", "valueCode": value})
    assert_outcome(post_check(client, body), 400, "profile")


# --- any node of a rich request replaced by any JSON value (hypothesis) ---------------------

def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


FIXTURES = ["patient-context-titration-dispense.json", "patient-context-dialysis-bundle.json",
            "demo-5-older-opioid.json", "demo-6-intrathecal-pump.json", "params-stu3-order.json",
            "bundle-transaction-urn.json"]


def _fixture(name: str) -> dict[str, Any]:
    root = pathlib.Path(__file__).resolve().parents[2] / "fixtures"
    data: dict[str, Any] = json.loads((root / name).read_text())
    return data


@pytest.mark.parametrize("name", FIXTURES)
def test_any_node_replaced_never_crashes(name: str) -> None:
    rich = _fixture(name)
    paths = _paths(rich)

    @settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "120")), deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(paths), JSON_VALUES)
    def check(path: tuple[Any, ...], value: Any) -> None:
        body = copy.deepcopy(rich)
        _set(body, list(path), value)
        resp = HOSTILE_APP.test_client().post("/MedicationRequest/$check", json=body)
        assert resp.status_code in (200, 400, 422), (path, value,
                                                     resp.get_data(as_text=True)[:300])
        out = resp.get_json()
        if resp.status_code == 200:
            validate(out)
        else:
            assert out["resourceType"] == "OperationOutcome"

    check()
