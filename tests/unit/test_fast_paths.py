"""The shortcuts taken for speed (issue 8) give exactly what the plain code gave.

Each fast path is compared with a plain reference written here, on generated inputs:
ingredient matching with its one-search prefilter, the one-walk normalised copy, the knowledge
number cache; and the engine reads each context order once and reads the dose of baclofen
orders only.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.assemble.normalise import _fix_datetimes, normalise_resource, normalised_copy
from service.checker import check_body
from service.clinical.ingredients import matches
from service.facts import drugs, orders
from service.fhirjson import has_code
from service.knowledge import KnowledgeError, frac, load
from tests.support.builders import baclofen_concept, dosage, order, parameters, rule_ids

KB = load()
NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)

# --- ingredient matching ------------------------------------------------------------------


def plain_matches(names: tuple[str, ...], ingredients: list[str], suffixes: list[str]
                  ) -> list[str]:
    """The matching rule as written in the knowledge data, without shortcuts."""
    found: list[str] = []
    for ingredient in ingredients:
        if any(re.search(rf"\b{re.escape(ingredient.lower())}\b", n) for n in names):
            found.append(ingredient)
    for suffix in suffixes:
        for n in names:
            for word in re.findall(r"[a-z]+", n):
                if word.endswith(suffix) and len(word) > len(suffix) + 2 and word not in found:
                    found.append(word)
    return found


WORDS = ["oxybate", "sodium oxybate", "codeine", "dihydrocodeine", "lisinopril", "pril",
         "tramadol", "Tramadol", "st. john's", "5-htp", "a", "metoprolol", "olol", "zolpidem"]
TEXT = st.lists(st.sampled_from(WORDS + ["10 mg", "tablet", "/", "-", " ", "(", ")"]),
                max_size=6).map(" ".join).map(str.lower)


@given(names=st.lists(TEXT, max_size=3).map(tuple),
       ingredients=st.lists(st.sampled_from(WORDS), max_size=6, unique=True),
       suffixes=st.lists(st.sampled_from(["pril", "olol", "sartan"]), max_size=2, unique=True))
def test_matches_is_the_plain_whole_word_search(names: tuple[str, ...], ingredients: list[str],
                                                suffixes: list[str]) -> None:
    assert matches(names, ingredients, suffixes) == plain_matches(names, ingredients, suffixes)


@pytest.mark.parametrize("rule_id", sorted(KB.interaction_classes))
def test_matches_finds_every_listed_ingredient_of_each_class(rule_id: str) -> None:
    spec = KB.interaction_classes[rule_id]
    ingredients = list(spec.get("ingredients", []))
    for ingredient in ingredients:
        names = (f"{ingredient.lower()} 10 mg oral tablet",)
        assert ingredient in matches(names, ingredients, []), ingredient
        assert matches(names, ingredients, []) == plain_matches(names, ingredients, [])


# --- normalised copy ------------------------------------------------------------------------

SCALAR = st.one_of(
    st.sampled_from(["2026-11-25T09:00", "2026-11-25T09:00:30.5", "2026-11-25T09:00:00Z",
                     "2026-11-25", "T", "oral", "x" * 45 + "T", ""]),
    st.integers(-5, 5), st.booleans(), st.none(), st.floats(allow_nan=False, width=32))
JSONV = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["a", "start", "doseQuantity", "doseAndRate", "rateRatio",
                                     "maxDosePerPeriod", "timing"]), inner, max_size=3)),
    max_leaves=12)


@st.composite
def resources(draw: Any) -> dict[str, Any]:
    rtype = draw(st.sampled_from(["MedicationRequest", "MedicationStatement",
                                  "MedicationDispense", "Observation", "Bundle"]))
    res: dict[str, Any] = {"resourceType": rtype, "authoredOn": draw(SCALAR)}
    key = {"MedicationStatement": "dosage"}.get(rtype, "dosageInstruction")
    res[key] = draw(st.lists(st.dictionaries(
        st.sampled_from(["doseQuantity", "doseRange", "rateQuantity", "doseAndRate",
                         "maxDosePerPeriod", "text"]), JSONV, max_size=3), max_size=2))
    if draw(st.booleans()):
        res["contained"] = [draw(resources())] if draw(st.booleans()) else [{
            "resourceType": "Medication", "id": "m", "meta": {"lastUpdated": draw(SCALAR)}}]
    if draw(st.booleans()):
        res["extra"] = draw(JSONV)
    return res


@given(raw=resources(), offset=st.sampled_from(["Z", "+01:00", "-05:30"]))
def test_normalised_copy_is_normalise_on_a_deep_copy(raw: dict[str, Any], offset: str) -> None:
    before = copy.deepcopy(raw)
    expected = normalise_resource(copy.deepcopy(raw), offset)
    assert normalised_copy(raw, offset) == expected
    assert raw == before  # the caller's JSON is left as it was


def test_normalised_copy_fixes_dates_without_offset_in_contained_resources() -> None:
    raw = {"resourceType": "MedicationRequest", "authoredOn": "2026-11-25T09:00",
           "contained": [{"resourceType": "Medication", "id": "m",
                          "meta": {"lastUpdated": "2026-11-24T08:30:15"}}],
           "dosageInstruction": [{"doseQuantity": {"value": 5, "unit": "mg"}}]}
    out = normalised_copy(raw, "+02:00")
    assert out["authoredOn"] == "2026-11-25T09:00:00+02:00"
    assert out["contained"][0]["meta"]["lastUpdated"] == "2026-11-24T08:30:15+02:00"
    assert out["dosageInstruction"] == [{"doseAndRate": [{"doseQuantity": {"value": 5,
                                                                           "unit": "mg"}}]}]
    assert out["intent"] == "order"
    plain = copy.deepcopy(raw)
    _fix_datetimes(plain, "+02:00")  # the walk the copy replaces leaves contained to its own
    assert plain["contained"][0]["meta"]["lastUpdated"] == "2026-11-24T08:30:15"


# --- knowledge numbers ----------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (5, Fraction(5)), (0.1, Fraction(1, 10)), (2.5, Fraction(5, 2)), ("1/3", Fraction(1, 3)),
    (" 7 ", Fraction(7)), (Fraction(3, 7), Fraction(3, 7)), (1.0, Fraction(1)),
], ids=["int", "float-0.1", "float-2.5", "ratio-text", "padded-text", "fraction", "float-1.0"])
def test_frac_is_exact_and_repeatable(value: Any, expected: Fraction) -> None:
    assert frac(value) == expected and frac(value) == expected
    assert type(frac(value)) is Fraction


@pytest.mark.parametrize("value", [True, False, None, [1], {"a": 1}, "one", ""],
                         ids=["true", "false", "none", "list", "dict", "word", "empty"])
def test_frac_refuses_what_is_not_a_number(value: Any) -> None:
    with pytest.raises(KnowledgeError, match="not a number"):
        frac(value)


# --- the facts stage reads each context order once, and only baclofen doses -----------------

def other_drug(rid: str) -> dict[str, Any]:
    return order(dosage(), id=rid, status="active",
                 concept={"text": "tizanidine 4 mg oral tablet"},
                 authoredOn="2026-10-01T09:00:00Z")


def check_with_context_orders() -> dict[str, Any]:
    """One baclofen order checked with an active baclofen order and two other drugs."""
    old = order(dosage(10, frequency=3), id="old-bac", status="active",
                concept=baclofen_concept(), authoredOn="2026-10-01T09:00:00Z")
    body = parameters(order(dosage(10, frequency=3)),
                      context=[old, other_drug("tiz-1"), other_drug("tiz-2")])
    result, _req, _outcome = check_body(body, NOW, "us", KB)
    return result


def test_each_context_order_is_read_once_and_only_baclofen(monkeypatch: Any) -> None:
    reads: list[str] = []
    real = orders.read_order

    def counting(resource: dict[str, Any], ref: str, *args: Any, **kw: Any) -> Any:
        reads.append(ref)
        return real(resource, ref, *args, **kw)

    monkeypatch.setattr("service.facts.build.read_order", counting)
    result = check_with_context_orders()
    assert sorted(reads) == ["MedicationRequest/old-bac", "MedicationRequest/ord-1"]
    # the context order is both a duplicate and the current regimen, from the one read
    assert "oral.duplicate" in rule_ids(result)
    assert "interaction.muscle-relaxant" in rule_ids(result)


def test_each_medicine_is_identified_once_per_call(monkeypatch: Any) -> None:
    """The order, the context order (another order, history and a medicine in use) and the
    other drugs (medicines in use) are each identified once, whatever reads them."""
    seen: list[str] = []
    real = drugs.identify

    def counting(resource: dict[str, Any], *args: Any, **kw: Any) -> Any:
        seen.append(str(resource.get("id")))
        return real(resource, *args, **kw)

    monkeypatch.setattr("service.facts.drugs.identify", counting)
    result = check_with_context_orders()
    assert sorted(seen) == ["old-bac", "ord-1", "tiz-1", "tiz-2"]
    assert "oral.duplicate" in rule_ids(result)


@pytest.mark.parametrize(("codes", "expected"), [
    (["1292"], True), ("1292", True), ("29", False), (["29"], False), (set(), False),
], ids=["list", "one-string", "substring-string", "substring-list", "empty"])
def test_has_code_matches_whole_codes_only(codes: Any, expected: bool) -> None:
    concept = baclofen_concept()
    assert has_code(concept, "http://www.nlm.nih.gov/research/umls/rxnorm", codes) is expected
