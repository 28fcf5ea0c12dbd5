"""Issue 13: the shapes real clients send (the CDS Hooks sandbox, Epic, Oracle Health) give the
same findings as their clean R4 twins, through both front doors.

Each fixture in ``fixtures/real-clients/`` holds a request as one client sends it (``shape``)
and the same order written as clean R4 (``twin``); the native ``$check`` and the CDS Hooks
``order-sign`` service must find the same (rule, severity) pairs for both, apart from the
findings the shape itself calls for (``extra_rules``: ``order.dose-conflict``).
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from service.assemble.normalise import conform_cardinality, normalise_resource
from service.metrics import INPUT_LEFT_OUT
from tests.support.cdsclient import EXT, SELECT, SIGN, cards, hook_call, post, searchset
from tests.support.checks import CLOCK_TIME, post_check

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "real-clients"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))
TWINNED = [n for n in NAMES if json.loads((FIXTURES / f"{n}.json").read_text())["twin"]]


def load(name: str) -> dict[str, Any]:
    """A fixture with its dates set from the apps' fixed clock (CDS Hooks and the native call
    without a checkTime check at the app's "now"): ``$now`` the order time, ``$today`` its
    date, ``$recent`` five days before."""
    now = CLOCK_TIME
    text = (FIXTURES / f"{name}.json").read_text()
    text = text.replace("$now", now.isoformat().replace("+00:00", "Z"))
    text = text.replace("$today", now.date().isoformat())
    text = text.replace("$recent", (now - timedelta(days=5)).isoformat().replace("+00:00", "Z"))
    data: dict[str, Any] = json.loads(text)
    return data


def native(client: FlaskClient, fx: dict[str, Any], part: str) -> tuple[list[tuple[str, str]],
                                                                         dict[str, Any]]:
    """(sorted (rule, severity) pairs, the result Bundle) of ``fx[part]`` through $check."""
    req = fx[part]
    params: list[dict[str, Any]] = [{"name": "order", "resource": o} for o in req["orders"]]
    params.append({"name": "patient", "resource": fx["patient"]})
    params += [{"name": "context", "resource": r}
               for r in req.get("siblings", []) + fx["context"]]
    resp = post_check(client, {"resourceType": "Parameters", "parameter": params})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    found = sorted((e["resource"]["identifier"][0]["value"], e["resource"]["severity"])
                   for e in body["entry"] if e["resource"]["resourceType"] == "DetectedIssue")
    return found, body


def by_cds(client: FlaskClient, fx: dict[str, Any], part: str, service: str = SIGN
           ) -> list[tuple[str, str]]:
    """Sorted (rule, severity) pairs of every DetectedIssue the cards carry."""
    req = fx[part]
    body = hook_call(*req["orders"], *req.get("siblings", []), service=service,
                     selections=[f"MedicationRequest/{o['id']}" for o in req["orders"]],
                     patient=fx["patient"],
                     prefetch={"creatinineClearance": searchset(*fx["context"])})
    found = []
    for card in cards(post(client, body, service)):
        issues = card.get("extension", {}).get(EXT)
        for di in issues if isinstance(issues, list) else [issues]:
            found.append((di["identifier"][0]["value"], di["severity"]))
    return sorted(found)


@pytest.mark.parametrize("name", TWINNED)
def test_shape_finds_what_its_clean_twin_finds_natively(client: FlaskClient, name: str) -> None:
    fx = load(name)
    shape, _ = native(client, fx, "shape")
    twin, _ = native(client, fx, "twin")
    extra = fx.get("extra_rules", [])
    assert [f for f in shape if f[0] not in extra] == twin
    assert sorted(r for r, _ in shape if r in extra) == sorted(extra)
    assert twin, "the twin must find something, or the comparison proves nothing"


@pytest.mark.parametrize("name", TWINNED)
def test_shape_finds_what_its_clean_twin_finds_on_cds_hooks(client: FlaskClient,
                                                             name: str) -> None:
    fx = load(name)
    shape = by_cds(client, fx, "shape")
    twin = by_cds(client, fx, "twin")
    extra = fx.get("extra_rules", [])
    assert [f for f in shape if f[0] not in extra] == twin
    assert sorted(r for r, _ in shape if r in extra) == sorted(extra)
    assert twin


def test_the_doses_read_from_each_shape_are_in_the_details(client: FlaskClient) -> None:
    """The numbers, not only the rule ids: 2 tablets of 10 mg three times a day is 60 mg/day
    whether the strength is written 10 MG/10 MG (Epic) or in the name; 5 mL of 15 MG/5ML is
    15 mg; 10 mL of 1 mg/mL is 10 mg."""
    for name, words in (("epic-sibling-medication", "60 mg/day"),
                        ("epic-doubled-liquid-strength", "45 mg/day"),
                        ("oracle-volume-dose", "30 mg/day"),
                        ("epic-typed-dose-conflict", "60 mg/day")):
        _, body = native(client, load(name), "shape")
        details = " ".join(e["resource"].get("detail", "") for e in body["entry"])
        assert words in details, (name, details)


def test_conflicting_typed_doses_name_each_amount_and_judge_the_largest(
        client: FlaskClient) -> None:
    _, body = native(client, load("epic-typed-dose-conflict"), "shape")
    conflict = next(e["resource"] for e in body["entry"]
                    if e["resource"].get("identifier", [{}])[0].get("value")
                    == "order.dose-conflict")
    assert conflict["severity"] == "low"
    assert conflict["code"]["coding"][0]["code"] == "DOSE"
    # the mg/kg entry cannot become mg without a weight: it is left out, never the first
    assert conflict["detail"].startswith(
        "The dose entries of this order give different amounts: 10 mg (ordered), "
        "20 mg (admin-amount).")
    assert "checked against the largest, 20 mg per dose" in conflict["detail"]


# --- the CDS Hooks sandbox's first calls ------------------------------------------------------

def test_sandbox_empty_draft_is_answered_with_no_card(client: FlaskClient) -> None:
    fx = load("sandbox-empty-draft")
    for service in (SELECT, SIGN):
        assert by_cds(client, fx, "shape", service) == []


def test_sandbox_empty_draft_natively_says_nothing_to_check(client: FlaskClient) -> None:
    found, body = native(client, load("sandbox-empty-draft"), "shape")
    assert found == []
    issues = [i for e in body["entry"] if e["resource"]["resourceType"] == "OperationOutcome"
              for i in e["resource"]["issue"]]
    assert any(i["severity"] == "information" and "names no medication yet" in i["diagnostics"]
               for i in issues), issues


def test_sandbox_sequence_select_empty_then_chosen_then_sign(client: FlaskClient) -> None:
    """What the sandbox does: order-select with the empty draft, order-select again once
    "Baclofen 10 MG Oral Tablet [Lioresal]" is chosen (category as an object, no intent), then
    order-sign; every call 200, the cards the record calls for (CrCl 40, 60 mg/day)."""
    empty = load("sandbox-empty-draft")
    chosen = load("sandbox-category-object")
    assert by_cds(client, empty, "shape", SELECT) == []
    selected = by_cds(client, chosen, "shape", SELECT)
    signed = by_cds(client, chosen, "shape", SIGN)
    assert signed == [("oral.start-dose", "moderate"), ("renal.dose-band", "high")]
    assert selected == signed


def test_order_select_reads_sibling_medications_of_draft_orders(client: FlaskClient) -> None:
    """Epic sends the Medication an order references as another entry of draftOrders; for
    order-select it is not a selection but it is read (no fetch, no 412)."""
    fx = load("epic-sibling-medication")
    assert by_cds(client, fx, "shape", SELECT) == by_cds(client, fx, "twin", SELECT) == [
        ("oral.start-dose", "moderate"), ("renal.dose-band", "high")]


# --- invalid content no rule reads ----------------------------------------------------------

def test_invalid_unread_elements_are_named_natively(client: FlaskClient) -> None:
    fx = load("invalid-unread-elements")
    _, body = native(client, fx, "shape")
    named = {i["expression"][0] for e in body["entry"]
             if e["resource"]["resourceType"] == "OperationOutcome"
             for i in e["resource"]["issue"] if i["severity"] == "information"
             and "left out" in i["diagnostics"]}
    assert named == set(fx["left_out"])


def test_invalid_unread_elements_are_counted_on_cds_hooks(client: FlaskClient) -> None:
    fx = load("invalid-unread-elements")
    counter = INPUT_LEFT_OUT.labels(resource="MedicationRequest")
    before = counter._value.get()
    by_cds(client, fx, "shape")
    assert counter._value.get() - before == len(fx["left_out"])


# --- the normaliser's properties ------------------------------------------------------------

UCUM = "http://unitsofmeasure.org"
codings = st.lists(st.fixed_dictionaries(
    {"system": st.sampled_from(["http://snomed.info/sct", "http://loinc.org"]),
     "code": st.from_regex(r"[0-9]{3,8}", fullmatch=True)}), min_size=1, max_size=2)
concepts = st.fixed_dictionaries({"coding": codings},
                                 optional={"text": st.text("abc xyz", min_size=1, max_size=8)})
quantities = st.builds(lambda v, u: {"value": v, "unit": u, "system": UCUM, "code": u},
                       st.integers(1, 200), st.sampled_from(["mg", "mL", "{tbl}", "ug"]))
dose_entries = st.lists(st.fixed_dictionaries(
    {"doseQuantity": quantities}, optional={"type": concepts}), min_size=1, max_size=3)
repeats = st.fixed_dictionaries(
    {"frequency": st.integers(1, 6), "period": st.integers(1, 3),
     "periodUnit": st.sampled_from(["d", "h", "wk"])},
    optional={"when": st.lists(st.sampled_from(["MORN", "NIGHT", "HS"]), min_size=1,
                               max_size=2, unique=True)})
dosages = st.fixed_dictionaries(
    {"timing": st.builds(lambda r: {"repeat": r}, repeats), "doseAndRate": dose_entries},
    optional={"route": concepts, "sequence": st.integers(1, 3),
              "additionalInstruction": st.lists(concepts, min_size=1, max_size=2)})
orders = st.fixed_dictionaries(
    {"resourceType": st.just("MedicationRequest"), "id": st.just("o1"),
     "status": st.sampled_from(["draft", "active"]), "intent": st.just("order"),
     "subject": st.just({"reference": "Patient/p1"}),
     "medicationCodeableConcept": concepts,
     "dosageInstruction": st.lists(dosages, min_size=1, max_size=3)},
    optional={"category": st.lists(concepts, min_size=1, max_size=2),
              "reasonCode": st.lists(concepts, min_size=1, max_size=2),
              "note": st.lists(st.fixed_dictionaries({"text": st.just("n")}), min_size=1,
                               max_size=2),
              "authoredOn": st.just("2026-11-20T10:00:00Z")})


def _unwrap_singletons(value: Any, draw_bits: list[bool]) -> Any:
    """The same resource with some one-item arrays sent as a bare object (what clients do)."""
    if isinstance(value, dict):
        return {k: _unwrap_singletons(v, draw_bits) for k, v in value.items()}
    if isinstance(value, list):
        items = [_unwrap_singletons(v, draw_bits) for v in value]
        if len(items) == 1 and isinstance(items[0], dict) and draw_bits and draw_bits.pop():
            return items[0]
        return items
    return value


@given(orders)
def test_normalising_a_valid_r4_order_changes_nothing(order: dict[str, Any]) -> None:
    MedicationRequest.model_validate(order)  # the strategy makes valid R4 only
    out = normalise_resource(copy.deepcopy(order), "Z")
    assert out == order


@given(orders, st.lists(st.booleans(), min_size=1, max_size=40))
def test_singletons_sent_as_objects_normalise_back_and_normalising_is_idempotent(
        order: dict[str, Any], bits: list[bool]) -> None:
    mangled = _unwrap_singletons(order, list(bits))
    once = normalise_resource(copy.deepcopy(mangled), "Z")
    assert once == order
    twice = normalise_resource(copy.deepcopy(once), "Z")
    assert twice == once


def test_cardinality_comes_from_the_models_not_a_list_of_names() -> None:
    """Elements the code never names are wrapped too (Timing.repeat.dayOfWeek, a contained
    Medication's ingredient is left to its own normalisation)."""
    order: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "dosageInstruction": {"timing": {"repeat": {"dayOfWeek": "mon"}},
                              "additionalInstruction": {"text": "with food"}},
        "insurance": {"reference": "Coverage/1"},
        "subject": [{"reference": "Patient/p1"}],
    }
    conform_cardinality(order, "MedicationRequest")
    assert order == {
        "resourceType": "MedicationRequest",
        "dosageInstruction": [{"timing": {"repeat": {"dayOfWeek": ["mon"]}},
                               "additionalInstruction": [{"text": "with food"}]}],
        "insurance": [{"reference": "Coverage/1"}],
        "subject": {"reference": "Patient/p1"},
    }


def test_a_medication_held_in_the_prefetch_is_not_fetched(client: FlaskClient) -> None:
    """The referenced Medication comes in a prefetch search (with _include): it is read from
    there by its absolute or relative reference, and nothing is fetched (there is no
    fhirServer, so a fetch would end as context.unavailable or a 412)."""
    fx = load("epic-sibling-medication")
    req = fx["shape"]
    body = hook_call(*req["orders"], service=SIGN, patient=fx["patient"],
                     prefetch={"creatinineClearance": searchset(*fx["context"]),
                               "medicationDispenses": searchset(*req["siblings"])})
    found = sorted((di["identifier"][0]["value"], di["severity"])
                   for card in cards(post(client, body, SIGN))
                   for di in ([card["extension"][EXT]] if isinstance(card["extension"][EXT], dict)
                              else card["extension"][EXT]))
    assert found == by_cds(client, fx, "twin")


@pytest.mark.parametrize("code", ["202109", "197391", "666857"])
def test_an_order_coded_only_by_an_rxnorm_baclofen_product_is_baclofen(
        client: FlaskClient, code: str) -> None:
    """RxNorm product codes from a public source (the sandbox's RxNorm list): an order with
    the code and no name is checked like the named one (90 mg/day is above 80 mg/day)."""
    fx = load("epic-typed-dose-agree")
    twin = copy.deepcopy(fx["twin"]["orders"][0])
    twin["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = 30
    coded = copy.deepcopy(twin)
    coded["medicationCodeableConcept"] = {"coding": [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}]}
    named, _ = native(client, {**fx, "shape": {"orders": [twin]}}, "shape")
    by_code, _ = native(client, {**fx, "shape": {"orders": [coded]}}, "shape")
    assert ("oral.max-daily", "moderate") in named
    assert by_code == named
