"""Order quality and unit rules (clinical-rules section 9)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from service.assemble.native import parse_body
from service.engine import run_check
from service.knowledge import load
from service.output.fhir import result_bundle
from tests.support.builders import baclofen_concept, by_rule, dosage, order, parameters
from tests.support.checks import found, http_run, run
from tests.support.fhir_validate import validate

UV, PRN, UG, LIQ = ("order.unverifiable-dose", "order.prn-no-max", "units.oral-microgram",
                    "units.liquid-volume")
MAX_PER_DAY = {"numerator": {"value": 30, "unit": "mg", "system": "http://unitsofmeasure.org",
                             "code": "mg"},
               "denominator": {"value": 1, "unit": "d", "system": "http://unitsofmeasure.org",
                               "code": "d"}}
SOLUTION = baclofen_concept("baclofen oral solution")
PLAIN_TABLET = baclofen_concept("baclofen tablet")


def free_text(text: str) -> dict[str, Any]:
    return {"text": text}


CASES = [
    pytest.param([dosage(500, "ug", 3)], None, [(UG, "high")], id="microgram-500-ug-high"),
    pytest.param([dosage(999, "mcg", 3)], None, [(UG, "high")], id="microgram-999-mcg-high"),
    pytest.param([dosage(1000, "ug", 3)], None, [], id="microgram-exactly-1-mg-no"),
    pytest.param([dosage(5000, "ug", 3)], None, [], id="microgram-5000-ug-is-5-mg"),
    pytest.param([dosage(500, "µg", 3)], None, [(UG, "high")], id="microgram-micro-sign"),
    pytest.param([dosage(0.5, "mg", 3)], None, [], id="half-mg-in-mg-is-not-a-unit-mixup"),
    pytest.param([dosage(500, "ug", None, asNeededBoolean=True)], None,
                 [(PRN, "low"), (UG, "high")],
                 id="microgram-and-prn-no-max-both-fire"),
    pytest.param([dosage(10, "mL", 3)], SOLUTION, [(LIQ, "moderate")],
                 id="liquid-volume-moderate-no-unverifiable"),
    pytest.param([dosage(10, "mL", 3)], baclofen_concept("baclofen 1 MG/ML Oral Solution"), [],
                 id="liquid-with-concentration-in-name-no"),
    pytest.param([dosage(2, "tablet", 3)], PLAIN_TABLET, [(UV, "low")],
                 id="tablet-without-strength-unverifiable"),
    pytest.param([dosage(10, "spoonful", 3)], None, [(UV, "low")], id="unknown-unit-unverifiable"),
    pytest.param([dosage(None, "mg", 3)], None, [(UV, "low")], id="no-dose-unverifiable"),
    pytest.param([free_text("10 mg three times a day")], None, [(UV, "low")],
                 id="free-text-only-unverifiable"),
    pytest.param([dosage(10, "mg", None)], None, [(UV, "low")], id="no-schedule-unverifiable"),
    pytest.param([dosage(0, "mg", 3)], None, [(UV, "low")], id="zero-dose-unverifiable"),
    pytest.param([dosage(10, "mg", None, asNeededBoolean=True)], None, [(PRN, "low")],
                 id="prn-no-frequency-no-max"),
    pytest.param([dosage(10, "mg", 3, asNeededBoolean=True)], None, [], id="prn-with-frequency"),
    pytest.param([dosage(10, "mg", None, asNeededBoolean=True, maxDosePerPeriod=MAX_PER_DAY)],
                 None, [], id="prn-with-max-dose-per-period"),
    pytest.param([dosage(10, "mg", None, asNeededCodeableConcept={"text": "spasm"})], None,
                 [(PRN, "low")], id="prn-concept-no-frequency-no-max"),
]


@pytest.mark.parametrize(("lines", "concept", "expected"), CASES)
def test_order_quality_rules(client, lines, concept, expected):
    result = http_run(client, parameters(order(*lines, concept=concept)))
    assert found(result) == sorted(expected)


def test_no_dosage_at_all_is_unverifiable():
    o = order()
    o["dosageInstruction"] = []
    o.pop("dosageInstruction")
    result = run(parameters(o))
    assert found(result) == [(UV, "low")]
    assert "no dosage instructions" in by_rule(result, UV)["detail"]


def test_microgram_detail_spells_micrograms_and_mg():
    di = by_rule(run(parameters(order(dosage(500, "ug", 3)))), UG)
    assert "500 micrograms (0.5 mg)" in di["detail"]
    assert di["code"]["coding"][0]["code"] == "DOSE"


def test_microgram_detail_does_not_round_up_to_1_mg():
    di = by_rule(run(parameters(order(dosage(999, "mcg", 3)))), UG)
    assert "999 micrograms (0.999 mg)" in di["detail"]


def test_liquid_volume_detail_lists_possible_doses():
    di = by_rule(run(parameters(order(dosage(10, "mL", 3), concept=SOLUTION))), LIQ)
    assert "10 mL" in di["detail"]
    assert "10 mg, 20 mg, 50 mg" in di["detail"]
    assert "1, 2, 5 mg/mL" in di["detail"]


def test_unknown_unit_detail_names_the_unit():
    di = by_rule(run(parameters(order(dosage(10, "spoonful", 3)))), UV)
    assert "spoonful" in di["detail"]


def test_readable_line_still_checked_beside_an_unreadable_one():
    result = run(parameters(order(dosage(30, "mg", 3), dosage(2, "tablet", 1),
                                  concept=PLAIN_TABLET)))
    assert found(result) == [("oral.max-daily", "moderate"), ("oral.max-single", "moderate"),
                             (UV, "low")]
    assert "at least 90 mg/day" in by_rule(result, "oral.max-daily")["detail"]


def check_with_hook(body: dict[str, Any], hook: str | None) -> dict[str, Any]:
    kb = load()
    req = parse_body(body, datetime(2026, 11, 25, 10, tzinfo=UTC), "us", load())
    req.hook = hook
    result = result_bundle(req, run_check(req, kb), kb)
    validate(result)
    return result


@pytest.mark.parametrize(("hook", "expected"), [
    pytest.param(None, [(UV, "low")], id="order-sign-raises-unverifiable"),
    pytest.param("order-select", [], id="order-select-no-unverifiable"),
])
def test_unverifiable_dose_not_raised_for_order_select(hook, expected):
    body = parameters(order(dosage(2, "tablet", 3), concept=PLAIN_TABLET))
    assert found(check_with_hook(body, hook)) == expected


def test_order_select_still_raises_the_specific_unit_rules():
    body = parameters(order(dosage(500, "ug", 3)))
    assert found(check_with_hook(body, "order-select")) == [(UG, "high")]
