"""DetectedIssue and result Bundle exactly as interfaces.md section 3; metadata, the
OperationDefinition and OpenAPI; numbers written as clinical-rules section 10 says."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from typing import Any
from urllib.parse import urlparse

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationdefinition import OperationDefinition

from service.knowledge import load
from service.wording import fmt, mg, mg_day, micrograms, times_per_day
from tests.support.builders import bundle, by_rule, dosage, issues, order, parameters, patient
from tests.support.checks import AUTH, FOUNDATION_RULES, http_run, run
from tests.support.fhir_validate import validate
from tests.support.fixtures import fixture


def finding_id(di: dict[str, Any]) -> str:
    value: str = di["identifier"][1]["value"]
    return value


def test_detected_issue_has_every_element_of_section_3(client):
    kb = load()
    result = http_run(client, parameters(order(dosage(30, "mg", 4))))
    di = by_rule(result, "oral.max-daily")
    assert di["identifier"][0] == {"system": "urn:baclofen-check:rule",
                                   "value": "oral.max-daily"}
    assert di["identifier"][1]["system"] == "urn:baclofen-check:finding"
    assert re.fullmatch(r"[0-9a-f]{16,64}", finding_id(di))
    assert di["status"] == "final"
    assert di["code"]["coding"] == [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                     "code": "DOSEH", "display": "High Dose Alert"}]
    assert di["code"]["text"]
    assert di["severity"] == "high"
    assert di["patient"] == {"reference": "Patient/pat-1"}
    assert di["identifiedDateTime"] == "2026-11-25T10:00:00Z"
    assert di["author"]["reference"] == "#checker"
    assert "baclofen-check" in di["author"]["display"]
    assert kb.version in di["author"]["display"]
    [device] = di["contained"]
    assert device["resourceType"] == "Device" and device["id"] == "checker"
    assert device["deviceName"][0]["name"] == "baclofen-check"
    assert device["version"][0]["value"] == kb.version
    assert di["implicated"][0] == {"reference": "MedicationRequest/ord-1"}
    assert di["reference"] == kb.rule("oral.max-daily").source_url
    assert di["reference"].startswith("https://")


@pytest.mark.parametrize(("rule_id", "lines", "code", "display"), [
    pytest.param("oral.max-single", [dosage(25, "mg", 3)], "DOSEH", "High Dose Alert",
                 id="max-single"),
    pytest.param("oral.probable-error", [dosage(80, "mg", 3)], "DOSEH", "High Dose Alert",
                 id="probable-error"),
    pytest.param("oral.frequency", [dosage(15, "mg", 2)], "DOSEIVL", "Dose-Interval Alert",
                 id="frequency"),
    pytest.param("units.oral-microgram", [dosage(500, "ug", 3)], "DOSE", "Dosage problem",
                 id="oral-microgram"),
    pytest.param("order.prn-no-max", [dosage(10, "mg", None, asNeededBoolean=True)], "DOSE",
                 "Dosage problem", id="prn-no-max"),
])
def test_act_code_and_reference_per_rule(rule_id, lines, code, display):
    di = by_rule(run(parameters(order(*lines))), rule_id)
    assert di["code"]["coding"][0]["code"] == code
    assert di["code"]["coding"][0]["display"] == display
    assert di["reference"] == load().rule(rule_id).source_url


def test_identified_date_time_keeps_the_check_time_offset(client):
    result = http_run(client, parameters(order(dosage(30, "mg", 4)),
                                      check_time="2026-11-25T11:30:00+01:00"))
    for di in issues(result):
        assert di["identifiedDateTime"] == "2026-11-25T11:30:00+01:00"


def test_check_time_without_offset_is_written_as_utc(client):
    result = http_run(client, parameters(order(dosage(30, "mg", 4)),
                                      check_time="2026-11-25T11:30:00"))
    assert issues(result)[0]["identifiedDateTime"] == "2026-11-25T11:30:00Z"


def test_finding_identifier_is_stable_and_depends_on_the_dose(client):
    first = http_run(client, parameters(order(dosage(30, "mg", 4))))
    again = http_run(client, parameters(order(dosage(30, "mg", 4)),
                                      check_time="2026-11-26T08:00:00Z"))
    other = http_run(client, parameters(order(dosage(35, "mg", 4))))
    other_order = http_run(client, parameters(order(dosage(30, "mg", 4), id="ord-2")))
    ids = {di["identifier"][0]["value"]: finding_id(di) for di in issues(first)}
    assert ids == {di["identifier"][0]["value"]: finding_id(di) for di in issues(again)}
    assert [e["resource"]["id"] for e in first["entry"]] == [
        e["resource"]["id"] for e in again["entry"]]
    changed = {di["identifier"][0]["value"]: finding_id(di) for di in issues(other)}
    assert ids["oral.max-daily"] != changed["oral.max-daily"]
    moved = {di["identifier"][0]["value"]: finding_id(di) for di in issues(other_order)}
    assert ids["oral.max-daily"] != moved["oral.max-daily"]
    assert len(set(ids.values())) == len(ids)  # one per rule


def test_id_less_inputs_get_urn_uuid_and_travel_in_the_result(client):
    o = order(dosage(30, "mg", 4), subject={"display": "Adaeze Okafor"})
    del o["id"]
    pat = patient()
    del pat["id"]
    result = http_run(client, parameters(o, pat=pat))
    by_url = {e["fullUrl"]: e["resource"] for e in result["entry"]}
    for di in issues(result):
        order_ref = di["implicated"][0]["reference"]
        assert order_ref.startswith("urn:uuid:")
        assert by_url[order_ref]["resourceType"] == "MedicationRequest"
        assert di["patient"]["reference"].startswith("urn:uuid:")
        assert by_url[di["patient"]["reference"]]["resourceType"] == "Patient"
    # the same body gives the same urn:uuid references
    again = http_run(client, parameters(o, pat=pat))
    assert sorted(e["fullUrl"] for e in again["entry"]) == sorted(by_url)


def test_transaction_bundle_references_resolve_inside_the_result(client):
    result = http_run(client, fixture("bundle-transaction-urn.json"))
    urls = {e["fullUrl"] for e in result["entry"]}
    for e in result["entry"]:
        for ref in re.findall(r'"reference": "(urn:uuid:[^"]+)"', str(e["resource"])
                              .replace("'", '"')):
            assert ref in urls, ref


def test_inputs_with_ids_are_not_copied_into_the_result(client):
    result = http_run(client, parameters(order(dosage(30, "mg", 4))))
    assert {e["resource"]["resourceType"] for e in result["entry"]} == {"DetectedIssue"}


def test_duplicate_evidence_and_implicated(client):
    other = order(dosage(10, "mg", 3), id="old", status="active")
    result = http_run(client, parameters(order(dosage(10, "mg", 3)), context=[other]))
    di = by_rule(result, "oral.duplicate")
    assert [r["reference"] for r in di["implicated"]] == ["MedicationRequest/ord-1",
                                                          "MedicationRequest/old"]
    assert di["evidence"] == [{"detail": [{"reference": "MedicationRequest/old"}]}]


def test_checked_nothing_found_is_an_empty_collection(client):
    result = http_run(client, parameters(order(dosage(5, "mg", 3))))
    assert result["type"] == "collection"
    assert [di for di in issues(result)
            if di["identifier"][0]["value"] in FOUNDATION_RULES] == []
    assert result["timestamp"] == "2026-11-25T10:00:00Z"


# --- metadata, OperationDefinition, OpenAPI ------------------------------------------------

def test_metadata_is_an_r4_capability_statement(client):
    resp = client.get("/metadata")
    assert resp.status_code == 200
    assert resp.mimetype == "application/fhir+json"
    cs = resp.get_json()
    CapabilityStatement.model_validate(cs)
    assert cs["kind"] == "instance"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["status"] in {"draft", "active", "retired", "unknown"}
    [rest] = cs["rest"]
    [resource] = [r for r in rest["resource"] if r["type"] == "MedicationRequest"]
    [operation] = resource["operation"]
    assert operation["name"] == "check"
    canonical = operation["definition"]
    served = client.get(urlparse(canonical).path)
    assert served.status_code == 200
    opdef = served.get_json()
    OperationDefinition.model_validate(opdef)
    assert opdef["url"] == canonical
    assert opdef["code"] == "check" and opdef["resource"] == ["MedicationRequest"]
    names = {p["name"]: p for p in opdef["parameter"]}
    assert set(names) == {"order", "patient", "context", "checkTime", "profile", "return"}
    assert names["checkTime"]["type"] == "dateTime"
    assert names["return"]["use"] == "out" and names["return"]["type"] == "Bundle"


def test_metadata_names_the_knowledge_version(client):
    cs = client.get("/metadata").get_json()
    assert cs["software"]["version"] == load().version


def flask_path_to_openapi(rule: str) -> str:
    return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", lambda m: "{" + m.group(1) + "}", rule)


def test_openapi_lists_every_endpoint(app, client):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.get_json()
    assert spec["openapi"].startswith("3.")
    documented = {(re.sub(r"\{[^}]+\}", "{}", path), method.upper())
                  for path, item in spec["paths"].items() for method in item}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"\{[^}]+\}", "{}", flask_path_to_openapi(rule.rule))
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, f"{method} {rule.rule} is not in openapi.json"


def test_metadata_and_openapi_need_no_token(client):
    assert client.get("/metadata").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/metadata", headers=AUTH).status_code == 200


# --- writing numbers (clinical-rules section 10) -------------------------------------------

@pytest.mark.parametrize(("value", "text"), [
    (Fraction(5), "5"), (Fraction(1, 2), "0.5"), (Fraction(53) + Fraction(1, 3), "53.3"),
    (Fraction(80), "80"), (Fraction(225, 10), "22.5"), (Fraction(5, 4), "1.25"),
    (Fraction(1, 8), "0.13"), (Fraction(0), "0"), (Fraction(100), "100"),
    (Fraction(999, 1000), "1"), (5.0, "5"), (0.25, "0.25"),
    (Fraction(10**40), "1" + "0" * 40), (Fraction(1, 10**7), "0.0000001"),
    (Fraction(3, 1000), "0.003"), (Fraction(-1, 2), "-0.5"),
])
def test_fmt(value, text):
    assert fmt(value) == text


def test_unit_words():
    assert mg(Fraction(5, 2)) == "2.5 mg"
    assert mg_day(Fraction(120)) == "120 mg/day"
    assert micrograms(Fraction(500)) == "500 micrograms"
    assert times_per_day(Fraction(3)) == "three times a day"
    assert times_per_day(Fraction(5)) == "5 times a day"
    assert times_per_day(Fraction(1, 2)) == "once every 2 days"
    assert times_per_day(Fraction(1, 7)) == "once every 7 days"


# Orders that exercise every detail text of the foundation rules, with awkward numbers.
SECTION_10_ORDERS = [
    [dosage(22.5, "mg", 4)], [dosage(27, "mg", 3)], [dosage(80.0, "mg", 3)],
    [dosage(0.03, "g", 4)], [dosage(500, "ug", 3)], [dosage(500, "mcg", 3)],
    [dosage(750, "µg", 3)], [dosage(5000, "ug", 3)], [dosage(12.5, "mL", 3)],
    [dosage(2.5, "tablet", 4)], [dosage(2, "tablet", 3)], [dosage(15.0, "mg", 2)],
    [dosage(2.5, "mg", 6)], [dosage(10.0, "mg", None, asNeededBoolean=True)],
    [dosage(20.50, "mg", 4)], [dosage(10, "spoonful", 3)], [dosage(30000, "ug", 4)],
    [dosage(3, "{tbl}", 3)], [dosage(1, "tablet", 1, timing={"repeat": {"count": 1}})],
    [dosage(0.5, "g", 1)],
]
CONCEPTS = [None, {"text": "baclofen oral solution"}, {"text": "baclofen 10 MG Oral Tablet"}]


@pytest.mark.parametrize("lines", SECTION_10_ORDERS)
@pytest.mark.parametrize("concept", CONCEPTS, ids=["default", "solution", "tablet-10"])
def test_every_detail_writes_numbers_for_people(lines, concept):
    other = order(dosage(7.5, "mg", 3), id="other", status="active")
    result = run(parameters(order(*lines, concept=concept), context=[other]))
    details = [di["detail"] for di in issues(result)]
    assert details
    for text in details:
        assert not re.search(r"\bug\b|µg|μg", text), text
        assert not re.search(r"\d\.\d*0(?!\d)", text), f"trailing zero: {text}"
        assert not re.search(r"(?<![\d])\.\d", text), f"no leading zero: {text}"
        assert not re.search(r"\{tbl\}", text), f"UCUM code in text: {text}"
        assert text.strip().endswith("."), text


@pytest.mark.parametrize("value", ["1e300", "9" * 60])
def test_absurd_doses_are_answered_not_500(client, value):
    body = parameters(order(dosage(1, "mg", 3)))
    text = json.dumps(body).replace('"value": 1,', f'"value": {value},')
    resp = client.post("/MedicationRequest/$check", data=text,
                       headers={"Content-Type": "application/fhir+json", **AUTH})
    assert resp.status_code == 200
    result = resp.get_json()
    validate(result)
    assert by_rule(result, "oral.probable-error")["severity"] == "high"


@pytest.mark.parametrize(("practitioner", "included"), [
    pytest.param({"resourceType": "Practitioner", "name": [{"family": "Osei"}]}, True,
                 id="valid-requester-travels"),
    pytest.param({"resourceType": "Practitioner", "name": "Dr Osei"}, False,
                 id="invalid-requester-stays-out"),
])
def test_resources_referenced_in_passing_travel_only_when_valid(client, practitioner, included):
    doctor = "urn:uuid:7a1c2d3e-0000-4000-8000-000000000009"
    o = order(dosage(30, "mg", 4), requester={"reference": doctor})
    del o["id"]
    body = bundle(patient(), o)
    body["entry"].append({"fullUrl": doctor, "resource": practitioner})
    result = http_run(client, body)
    assert (doctor in {e["fullUrl"] for e in result["entry"]}) is included
