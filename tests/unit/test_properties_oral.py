"""Section 11 invariants for the oral ceiling rules, by property-based testing.

- a higher dose never yields a milder or missing ceiling finding;
- the same input always yields the same findings;
- any syntactically valid MedicationRequest yields a result or a 4xx, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import create_app
from service.checker import check_body
from service.knowledge import load
from tests.support.builders import UCUM, baclofen_concept, issues, order, parameters
from tests.support.checks import AUTH, TOKEN
from tests.support.fhir_validate import validate

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
CEILING = ("oral.max-daily", "oral.max-single", "oral.probable-error")
RANK = {"low": 1, "moderate": 2, "high": 3}
PROPS = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    db = tmp_path_factory.mktemp("props") / "audit.sqlite3"
    app = create_app({"API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN, "CDS_REQUIRE_JWT": False,
                      "DATABASE_URL": f"sqlite:///{db}"})
    yield app.test_client()


def ceiling(result: dict[str, Any]) -> dict[str, int]:
    """Rank of each ceiling finding (0 when absent)."""
    ranks = dict.fromkeys(CEILING, 0)
    for di in issues(result):
        rule = di["identifier"][0]["value"]
        if rule in ranks:
            ranks[rule] = max(ranks[rule], RANK[di["severity"]])
    return ranks


def mg_dosage(dose: Decimal, per_day: int, unit: str = "mg") -> dict[str, Any]:
    code = {"mg": "mg", "g": "g", "ug": "ug", "tablet": "{tbl}"}[unit]
    return {"doseAndRate": [{"doseQuantity": {"value": float(dose), "unit": unit,
                                              "system": UCUM, "code": code}}],
            "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}}


def result_for(lines: list[dict[str, Any]], profile: str, concept: Any = None
               ) -> dict[str, Any]:
    body = parameters(order(*lines, concept=concept), profile=profile)
    result = check_body(body, NOW, profile, load())[0]
    validate(result)
    return result


doses = st.decimals(min_value=Decimal("0.25"), max_value=Decimal("400"), places=2)
frequencies = st.integers(min_value=1, max_value=8)
profiles = st.sampled_from(["us", "uk"])


@PROPS
@given(a=doses, b=doses, per_day=frequencies, profile=profiles)
def test_a_higher_dose_is_never_milder(a, b, per_day, profile):
    low, high = sorted((a, b))
    r_low = ceiling(result_for([mg_dosage(low, per_day)], profile))
    r_high = ceiling(result_for([mg_dosage(high, per_day)], profile))
    for rule in CEILING:
        assert r_high[rule] >= r_low[rule], (rule, low, high, per_day, profile)


@PROPS
@given(dose=doses, a=frequencies, b=frequencies, profile=profiles)
def test_more_administrations_are_never_milder(dose, a, b, profile):
    fewer, more = sorted((a, b))
    r_fewer = ceiling(result_for([mg_dosage(dose, fewer)], profile))
    r_more = ceiling(result_for([mg_dosage(dose, more)], profile))
    for rule in CEILING:
        assert r_more[rule] >= r_fewer[rule], (rule, dose, fewer, more, profile)


@PROPS
@given(a=st.integers(min_value=1, max_value=40), b=st.integers(min_value=1, max_value=40),
       per_day=frequencies, profile=profiles)
def test_more_tablets_are_never_milder(a, b, per_day, profile):
    fewer, more = sorted((a, b))
    concept = baclofen_concept("baclofen 10 MG Oral Tablet")
    r_fewer = ceiling(result_for([mg_dosage(Decimal(fewer) / 2, per_day, "tablet")], profile,
                                 concept))
    r_more = ceiling(result_for([mg_dosage(Decimal(more) / 2, per_day, "tablet")], profile,
                                concept))
    for rule in CEILING:
        assert r_more[rule] >= r_fewer[rule]


@PROPS
@given(dose=doses, per_day=frequencies, profile=profiles,
       unit=st.sampled_from(["mg", "g", "ug"]))
def test_the_same_dose_in_another_unit_gives_the_same_ceiling_findings(dose, per_day, profile,
                                                                      unit):
    factor = {"mg": Decimal(1), "g": Decimal("0.001"), "ug": Decimal(1000)}[unit]
    in_mg = ceiling(result_for([mg_dosage(dose, per_day)], profile))
    converted = ceiling(result_for([mg_dosage(dose * factor, per_day, unit)], profile))
    assert converted == in_mg


@PROPS
@given(dose=doses, per_day=frequencies, profile=profiles, extra=doses)
def test_an_added_dosage_line_is_never_milder(dose, per_day, profile, extra):
    alone = ceiling(result_for([mg_dosage(dose, per_day)], profile))
    added = ceiling(result_for([mg_dosage(dose, per_day), mg_dosage(extra, 1)], profile))
    for rule in CEILING:
        assert added[rule] >= alone[rule]


def snapshot(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return sorted((di["identifier"][0]["value"], di["identifier"][1]["value"], di["severity"],
                   di["detail"]) for di in issues(result))


@PROPS
@given(dose=doses, per_day=frequencies, profile=profiles)
def test_the_same_input_gives_the_same_findings(http, dose, per_day, profile):
    body = json.dumps(parameters(order(mg_dosage(dose, per_day)), profile=profile))
    headers = {"Content-Type": "application/fhir+json", **AUTH}
    first = http.post("/MedicationRequest/$check", data=body, headers=headers).get_json()
    second = http.post("/MedicationRequest/$check", data=body, headers=headers).get_json()
    assert snapshot(first) == snapshot(second)
    assert first == second


# --- any syntactically valid MedicationRequest ----------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                      st.floats(allow_nan=False, allow_infinity=False, width=32),
                      st.text(max_size=12))
json_values = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
numbers = st.one_of(st.integers(-5, 5000), st.floats(-10, 5000, allow_nan=False),
                    st.decimals(min_value=-1, max_value=5000, places=3).map(float),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(min_value=0, max_value=10**40))
units = st.sampled_from(["mg", "g", "ug", "mcg", "µg", "mL", "{tbl}", "TAB", "tablet",
                         "{pill}", "{packet}", "spoon", "mg/d", "", "MG"])
quantities = st.fixed_dictionaries(
    {}, optional={"value": numbers, "unit": units, "code": units,
                  "system": st.just(UCUM), "comparator": st.sampled_from(["<", ">=", "<="])})
ratios = st.fixed_dictionaries({}, optional={"numerator": quantities, "denominator": quantities})
repeats = st.fixed_dictionaries({}, optional={
    "frequency": st.integers(0, 30), "frequencyMax": st.integers(0, 30),
    "period": st.floats(0, 100, allow_nan=False), "periodMax": st.floats(0, 100, allow_nan=False),
    "periodUnit": st.sampled_from(["s", "min", "h", "d", "wk", "mo", "a"]),
    "count": st.integers(0, 5),
    "when": st.lists(st.sampled_from(["MORN", "NOON", "EVE", "NIGHT", "HS", "ACM"]), max_size=4),
    "timeOfDay": st.lists(st.sampled_from(["08:00:00", "12:00:00", "20:00:00"]), max_size=3),
    "boundsDuration": st.fixed_dictionaries({"value": st.integers(0, 30),
                                             "unit": st.sampled_from(["d", "wk", "h"]),
                                             "code": st.sampled_from(["d", "wk", "h"])}),
    "boundsPeriod": st.fixed_dictionaries({}, optional={
        "start": st.sampled_from(["2026-11-20", "2026-11-25T08:00:00Z", "2026-11",
                                  "2026-11-25T08:00:00"]),
        "end": st.sampled_from(["2026-11-30", "2026-11-01T00:00:00+05:00", "2027"])}),
})
timings = st.fixed_dictionaries({}, optional={
    "repeat": repeats,
    "code": st.fixed_dictionaries({}, optional={
        "text": st.sampled_from(["TID", "BID", "q6h", "QOD", "whenever", ""]),
        "coding": st.lists(st.fixed_dictionaries({"code": st.sampled_from(
            ["QD", "BID", "TID", "QID", "Q4H", "WK", "MO", "XYZ"])}), max_size=2)}),
})
dose_and_rates = st.fixed_dictionaries({}, optional={
    "doseQuantity": quantities,
    "doseRange": st.fixed_dictionaries({}, optional={"low": quantities, "high": quantities}),
    "rateRatio": ratios, "rateQuantity": quantities})
dosages = st.fixed_dictionaries({}, optional={
    "sequence": st.integers(0, 4),
    "text": st.text(max_size=20),
    "timing": timings,
    "asNeededBoolean": st.booleans(),
    "route": st.sampled_from([
        {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}]},
        {"coding": [{"system": "http://snomed.info/sct", "code": "72607000"}]},
        {"text": "PO"}, {"text": "IT"}, {"text": "via PEG tube"}]),
    "doseAndRate": st.one_of(st.lists(dose_and_rates, max_size=2), dose_and_rates),
    "doseQuantity": quantities,
    "maxDosePerPeriod": st.one_of(ratios, st.lists(ratios, max_size=2)),
})
medications = st.sampled_from([
    {"medicationCodeableConcept": baclofen_concept()},
    {"medicationCodeableConcept": {"text": "Baclofen 1 MG/ML oral solution"}},
    {"medicationCodeableConcept": {"text": "baclofen 2 mg/mL intrathecal injection"}},
    {"medicationCodeableConcept": {"text": "tizanidine 4 mg tablet"}},
    {"medicationReference": {"reference": "#m"}, "contained": [{
        "resourceType": "Medication", "id": "m", "code": {"text": "baclofen"},
        "ingredient": [{"itemCodeableConcept": {"text": "baclofen"}, "strength": {
            "numerator": {"value": 5, "unit": "mg"},
            "denominator": {"value": 1, "unit": "mL"}}}]}]},
    {"medicationReference": {"reference": "Medication/missing", "display": "baclofen"}},
])


@st.composite
def medication_requests(draw: st.DrawFn) -> dict[str, Any]:
    mr: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": "ord-1",
        "status": draw(st.sampled_from(["draft", "active", "on-hold", "stopped", "completed",
                                        "cancelled", "unknown", "entered-in-error"])),
        "subject": {"reference": "Patient/pat-1"},
        **draw(medications),
    }
    if draw(st.booleans()):
        mr["intent"] = draw(st.sampled_from(["order", "plan", "proposal"]))
    if draw(st.booleans()):
        mr["authoredOn"] = draw(st.sampled_from(["2026-11-25", "2026-11-25T09:00:00Z",
                                                 "2026-11-25T09:00", "2025"]))
    mr["dosageInstruction"] = draw(st.lists(dosages, max_size=3))
    if draw(st.booleans()):
        mr["priorPrescription"] = {"reference": draw(st.sampled_from(
            ["MedicationRequest/old", "https://x.example/MedicationRequest/old", "#x"]))}
    return mr


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    orders = draw(st.lists(medication_requests(), min_size=1, max_size=2))
    for n, o in enumerate(orders):
        o["id"] = f"ord-{n}"
    if draw(st.booleans()):
        return parameters(*orders, context=draw(st.lists(medication_requests(), max_size=2)))
    entries = [*orders, {"resourceType": "Patient", "id": "pat-1", "birthDate": "1970"}]
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in entries]}


def assert_answered(http: FlaskClient, body: Any) -> None:
    resp = http.post("/MedicationRequest/$check", data=json.dumps(body),
                     headers={"Content-Type": "application/fhir+json", **AUTH})
    assert resp.status_code == 200 or 400 <= resp.status_code < 500, resp.get_data(as_text=True)
    answer = resp.get_json()
    validate(answer)
    if resp.status_code != 200:
        assert answer["resourceType"] == "OperationOutcome"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=requests())
def test_any_medication_request_gets_a_result_or_a_4xx(http, body):
    assert_answered(http, body)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dosage=json_values, timing=json_values)
def test_arbitrary_json_in_the_dosage_gets_a_result_or_a_4xx(http, dosage, timing):
    o = order()
    o["dosageInstruction"] = [{"doseAndRate": dosage, "timing": timing}]
    assert_answered(http, parameters(o))


context_resources = st.builds(
    lambda rtype, fields, rid: {"resourceType": rtype, **({"id": rid} if rid else {}),
                                **fields},
    st.sampled_from(["Observation", "Condition", "MedicationStatement", "MedicationDispense",
                     "MedicationAdministration", "Procedure", "Medication", "Practitioner",
                     "OperationOutcome", "Foo"]),
    st.dictionaries(st.sampled_from(["status", "code", "subject", "effectiveDateTime",
                                     "valueQuantity", "medicationCodeableConcept",
                                     "medicationReference", "dosage", "ingredient",
                                     "clinicalStatus", "whenHandedOver", "contained"]),
                    json_values, max_size=5),
    st.one_of(st.none(), st.sampled_from(["c1", "c2", "m"])))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mr=medication_requests(), context=st.lists(context_resources, max_size=4),
       urns=st.booleans(), bundle_type=st.sampled_from([None, "collection", "transaction",
                                                        "searchset"]))
def test_any_bundle_with_any_context_gets_a_result_or_a_4xx(http, mr, context, urns,
                                                             bundle_type):
    entries: list[dict[str, Any]] = []
    resources = [{"resourceType": "Patient", "id": "pat-1"}, mr, *context]
    for n, res in enumerate(resources):
        entry: dict[str, Any] = {"resource": res}
        if urns:
            entry["fullUrl"] = f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
        entries.append(entry)
    body: dict[str, Any] = {"resourceType": "Bundle", "entry": entries}
    if bundle_type:
        body["type"] = bundle_type
    assert_answered(http, body)
