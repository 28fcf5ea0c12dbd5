"""Reading the order (clinical-rules section 1): units, dose shapes, timing forms, time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pytest

from service.checker import check_body
from service.facts.drugs import route_of
from service.fhirjson import parse_datetime_range
from service.knowledge import load
from service.model import OrderFacts
from tests.support.builders import (
    RXNORM,
    SNOMED,
    UCUM,
    baclofen_concept,
    bundle,
    dosage,
    order,
    parameters,
    patient,
)
from tests.support.fhir_validate import validate

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def facts(o: dict[str, Any], context: list[dict[str, Any]] | None = None,
          now: datetime = NOW) -> OrderFacts:
    """Read one order through the real parse and engine path (and validate the output)."""
    result, _req, outcome = check_body(parameters(o, context=context), now, "us", load())
    validate(result)
    return outcome.orders[0]


def line_of(o: dict[str, Any], **kw: Any) -> Any:
    read = facts(o, **kw)
    assert len(read.lines) == 1
    return read.lines[0]


def qty(value: Any, unit: str | None = None, code: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if unit is not None:
        q["unit"] = unit
    if code is not None:
        q.update(system=UCUM, code=code)
    return q


def dose_order(q: dict[str, Any], concept: dict[str, Any] | None = None,
               **extra: Any) -> dict[str, Any]:
    d = {"doseAndRate": [{"doseQuantity": q}],
         "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}}
    return order(d, concept=concept, **extra)


def tablet_medication(strength: dict[str, Any] | None, mid: str = "med-1",
                      name: str = "baclofen oral tablet") -> dict[str, Any]:
    med: dict[str, Any] = {
        "resourceType": "Medication", "id": mid,
        "code": {"coding": [{"system": RXNORM, "code": "1292", "display": "baclofen"}],
                 "text": name},
    }
    if strength is not None:
        med["ingredient"] = [{"itemCodeableConcept": {"text": "baclofen"},
                              "strength": strength}]
    return med


def ratio(num: Any, num_unit: str, den: Any = 1, den_unit: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"numerator": {"value": num, "unit": num_unit, "system": UCUM,
                                       "code": num_unit}}
    if den_unit is None:
        r["denominator"] = {"value": den, "unit": "tablet", "system": UCUM, "code": "{tbl}"}
    else:
        r["denominator"] = {"value": den, "unit": den_unit, "system": UCUM, "code": den_unit}
    return r


# --- units ------------------------------------------------------------------------------

MASS_CASES = [
    pytest.param(qty(10, "mg", "mg"), Fraction(10), "mg", id="mg-ucum"),
    pytest.param(qty(10, "milligram"), Fraction(10), "mg", id="mg-text-only"),
    pytest.param(qty(0.01, "g", "g"), Fraction(10), "g", id="g-0.01"),
    pytest.param(qty(5000, "ug", "ug"), Fraction(5), "ug", id="ug-5000"),
    pytest.param(qty(5000, "mcg"), Fraction(5), "ug", id="mcg-text"),
    pytest.param(qty(5000, "µg"), Fraction(5), "ug", id="micro-sign-text"),
    pytest.param(qty(7.5, "MG"), Fraction(15, 2), "mg", id="mg-upper-case-text"),
]


@pytest.mark.parametrize(("quantity", "dose_mg", "unit"), MASS_CASES)
def test_mass_units_become_mg(quantity, dose_mg, unit):
    line = line_of(dose_order(quantity))
    assert line.dose_mg == dose_mg
    assert line.written_unit == unit
    assert line.problem is None


def test_ucum_code_wins_over_unit_text():
    line = line_of(dose_order({"value": 10, "unit": "milligrams (as written)", "system": UCUM,
                               "code": "mg"}))
    assert line.dose_mg == 10


LIQUID_CASES = [
    pytest.param(
        {"medicationReference": {"reference": "#liq"},
         "contained": [{"resourceType": "Medication", "id": "liq",
                        "code": {"text": "baclofen oral solution"},
                        "ingredient": [{"itemCodeableConcept": {"text": "baclofen"},
                                        "strength": ratio(1, "mg", 1, "mL")}]}]},
        Fraction(10), id="ingredient-strength-1mg-per-mL"),
    pytest.param(
        {"medicationReference": {"reference": "#liq"},
         "contained": [{"resourceType": "Medication", "id": "liq",
                        "code": {"text": "baclofen suspension"},
                        "ingredient": [{"itemCodeableConcept": {"text": "baclofen"},
                                        "strength": ratio(25, "mg", 5, "mL")}]}]},
        Fraction(50), id="ingredient-strength-25mg-per-5mL"),
    pytest.param(
        {"medicationCodeableConcept": baclofen_concept("baclofen 1 MG/ML Oral Solution")},
        Fraction(10), id="name-1-MG-per-ML"),
    pytest.param(
        {"medicationCodeableConcept": baclofen_concept("baclofen 5 mg/5 mL oral solution")},
        Fraction(10), id="name-5mg-per-5mL"),
    pytest.param(
        {"medicationCodeableConcept": baclofen_concept("Baclofen 25 mg/5 mL suspension")},
        Fraction(50), id="name-25mg-per-5mL"),
]


@pytest.mark.parametrize(("drug", "dose_mg"), LIQUID_CASES)
def test_millilitres_with_a_concentration(drug, dose_mg):
    o = dose_order(qty(10, "mL", "mL"))
    o.pop("medicationCodeableConcept")
    o.update(drug)
    line = line_of(o)
    assert line.dose_mg == dose_mg
    assert line.written_unit == "mL"
    assert line.problem is None


def test_millilitres_without_a_concentration_is_a_liquid_volume_problem():
    o = dose_order(qty(10, "mL", "mL"), concept=baclofen_concept("baclofen oral solution"))
    line = line_of(o)
    assert line.dose_mg is None
    assert line.problem_rule == "units.liquid-volume"


TABLET_CASES = [
    pytest.param(qty(2, "tablet", "{tbl}"), baclofen_concept("baclofen 10 MG Oral Tablet"),
                 Fraction(20), id="tbl-code-name-strength"),
    pytest.param(qty(2, "TAB"), baclofen_concept("baclofen 10 MG Oral Tablet"),
                 Fraction(20), id="TAB-text"),
    pytest.param(qty(1.5, "tablet"), baclofen_concept("Baclofen 5mg tablets"),
                 Fraction(15, 2), id="tablet-text-5mg"),
    pytest.param(qty(1, "{pill}"), baclofen_concept("baclofen 20 MG Oral Tablet"),
                 Fraction(20), id="pill"),
]


@pytest.mark.parametrize(("quantity", "concept", "dose_mg"), TABLET_CASES)
def test_tablet_counts_with_the_strength_from_the_name(quantity, concept, dose_mg):
    line = line_of(dose_order(quantity, concept=concept))
    assert line.dose_mg == dose_mg
    assert line.written_unit == "count"


def test_tablet_strength_from_contained_medication_ingredient():
    o = dose_order(qty(2, "tablet", "{tbl}"))
    o.pop("medicationCodeableConcept")
    o["contained"] = [tablet_medication(ratio(10, "mg"), mid="tab")]
    o["medicationReference"] = {"reference": "#tab"}
    assert line_of(o).dose_mg == 20


def test_ingredient_strength_wins_over_the_name():
    o = dose_order(qty(1, "tablet", "{tbl}"))
    o.pop("medicationCodeableConcept")
    o["contained"] = [tablet_medication(ratio(5, "mg"), mid="tab",
                                        name="baclofen 10 MG Oral Tablet")]
    o["medicationReference"] = {"reference": "#tab"}
    assert line_of(o).dose_mg == 5


def test_tablet_without_a_strength_cannot_be_read():
    o = dose_order(qty(2, "tablet", "{tbl}"), concept=baclofen_concept("baclofen tablet"))
    line = line_of(o)
    assert line.dose_mg is None
    assert line.problem and "strength" in line.problem
    assert line.problem_rule is None  # order.unverifiable-dose covers it


def test_unknown_unit_cannot_be_read():
    line = line_of(dose_order(qty(10, "spoonful")))
    assert line.dose_mg is None
    assert line.problem and "spoonful" in line.problem


def test_dose_range_uses_the_high_end():
    d = {"doseAndRate": [{"doseRange": {"low": qty(5, "mg", "mg"), "high": qty(15, "mg", "mg")}}],
         "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}}
    assert line_of(order(d)).dose_mg == 15


def test_stu3_dose_quantity_on_the_dosage():
    d = {"doseQuantity": qty(15, "mg", "mg"),
         "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}}
    line = line_of(order(d))
    assert line.dose_mg == 15 and line.per_day == 3


def test_dose_and_rate_as_an_object():
    d = {"doseAndRate": {"doseQuantity": qty(15, "mg", "mg")},
         "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}}
    assert line_of(order(d)).dose_mg == 15


def test_medication_reference_to_a_bundled_medication_by_type_and_id():
    o = dose_order(qty(3, "tablet", "{tbl}"))
    o.pop("medicationCodeableConcept")
    o["medicationReference"] = {"reference": "Medication/m10"}
    result, _req, outcome = check_body(
        bundle(patient(), o, tablet_medication(ratio(10, "mg"), mid="m10")), NOW, "us",
        load())
    validate(result)
    assert outcome.orders[0].is_baclofen
    assert outcome.orders[0].lines[0].dose_mg == 30


def test_medication_reference_to_a_bundled_medication_by_urn_uuid():
    o = dose_order(qty(3, "tablet", "{tbl}"))
    o.pop("medicationCodeableConcept")
    med_url = "urn:uuid:3f1e0a52-5d55-4a2b-9c64-1b2f1b2a0c01"
    o["medicationReference"] = {"reference": med_url}
    o["subject"] = {"reference": "urn:uuid:3f1e0a52-5d55-4a2b-9c64-1b2f1b2a0c02"}
    med = tablet_medication(ratio(10, "mg"))
    del med["id"]
    body = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:3f1e0a52-5d55-4a2b-9c64-1b2f1b2a0c02",
         "resource": {"resourceType": "Patient", "birthDate": "1970-01-01"},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": med_url, "resource": med, "request": {"method": "POST", "url": "Medication"}},
        {"fullUrl": "urn:uuid:3f1e0a52-5d55-4a2b-9c64-1b2f1b2a0c03",
         "resource": o,
         "request": {"method": "POST", "url": "MedicationRequest"}},
    ]}
    result, _req, outcome = check_body(body, NOW, "us", load())
    validate(result)
    assert outcome.orders[0].lines[0].dose_mg == 30


def test_medication_recognised_by_ingredient_code_only():
    o = dose_order(qty(10, "mg", "mg"))
    o.pop("medicationCodeableConcept")
    o["contained"] = [{"resourceType": "Medication", "id": "m", "code": {"text": "Lioresal"},
                       "ingredient": [{"itemCodeableConcept": {"coding": [
                           {"system": RXNORM, "code": "1292"}]}}]}]
    o["medicationReference"] = {"reference": "#m"}
    assert facts(o).is_baclofen


# --- timing -----------------------------------------------------------------------------

def timing_order(timing: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return order({"doseAndRate": [{"doseQuantity": qty(10, "mg", "mg")}], "timing": timing,
                  **extra})


REPEAT_CASES = [
    pytest.param({"frequency": 3, "period": 1, "periodUnit": "d"}, Fraction(3), id="3-per-day"),
    pytest.param({"frequency": 1, "period": 8, "periodUnit": "h"}, Fraction(3), id="every-8h"),
    pytest.param({"frequency": 1, "period": 6, "periodUnit": "h"}, Fraction(4), id="every-6h"),
    pytest.param({"frequency": 2, "period": 1, "periodUnit": "wk"}, Fraction(2, 7),
                 id="twice-a-week"),
    pytest.param({"period": 12, "periodUnit": "h"}, Fraction(2), id="period-without-frequency"),
    pytest.param({"frequency": 2, "frequencyMax": 4, "period": 1, "periodUnit": "d"},
                 Fraction(4), id="frequencyMax-worst-case"),
    pytest.param({"frequency": 1, "period": 6, "periodMax": 8, "periodUnit": "h"},
                 Fraction(4), id="periodMax-shorter-bound-worst-case"),
    pytest.param({"frequency": 1, "period": 4, "periodMax": 6, "periodUnit": "h"},
                 Fraction(6), id="period-4-6h"),
    pytest.param({"when": ["MORN", "NIGHT"]}, Fraction(2), id="when-two"),
    pytest.param({"timeOfDay": ["08:00:00", "14:00:00", "20:00:00"]}, Fraction(3),
                 id="timeOfDay-three"),
    pytest.param({"frequency": 3, "period": 1, "periodUnit": "d", "count": 9}, Fraction(3),
                 id="count-9-is-not-single"),
    pytest.param({"frequency": 1, "period": 1, "periodUnit": "wk", "when": ["MORN"]},
                 Fraction(1, 7), id="weekly-in-the-morning-frequency-wins-over-when"),
    pytest.param({"frequency": 2, "period": 1, "periodUnit": "d", "when": ["MORN", "HS"]},
                 Fraction(2), id="frequency-and-matching-when"),
    pytest.param({"frequency": 1, "period": 1, "periodUnit": "d", "when": ["MORN", "HS"]},
                 Fraction(1), id="repeat-frequency-comes-before-when-count"),
]


def test_timing_code_comes_before_when_count():
    timing = {"code": {"text": "TID"}, "repeat": {"when": ["MORN", "HS"]}}
    assert line_of(timing_order(timing)).per_day == 3


def test_repeat_comes_before_timing_code():
    timing = {"code": {"text": "QID"}, "repeat": {"frequency": 2, "period": 1,
                                                  "periodUnit": "d"}}
    assert line_of(timing_order(timing)).per_day == 2


@pytest.mark.parametrize(("repeat", "per_day"), REPEAT_CASES)
def test_repeat_forms(repeat, per_day):
    line = line_of(timing_order({"repeat": repeat}))
    assert line.per_day == per_day
    assert line.problem is None


TIMING_CODES = [
    ("QD", Fraction(1)), ("BID", Fraction(2)), ("TID", Fraction(3)), ("QID", Fraction(4)),
    ("AM", Fraction(1)), ("PM", Fraction(1)), ("BED", Fraction(1)), ("Q1H", Fraction(24)),
    ("Q2H", Fraction(12)), ("Q3H", Fraction(8)), ("Q4H", Fraction(6)), ("Q6H", Fraction(4)),
    ("Q8H", Fraction(3)), ("Q12H", Fraction(2)), ("QOD", Fraction(1, 2)),
    ("WK", Fraction(1, 7)), ("MO", Fraction(1, 30)),
]


@pytest.mark.parametrize(("code", "per_day"), TIMING_CODES, ids=[c for c, _ in TIMING_CODES])
def test_every_timing_code(code, per_day):
    timing = {"code": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", "code": code}]}}
    line = line_of(timing_order(timing))
    assert line.per_day == per_day
    assert line.problem is None


def test_timing_code_given_only_as_text():
    assert line_of(timing_order({"code": {"text": "tid"}})).per_day == 3


def test_count_one_without_frequency_is_a_single_dose():
    line = line_of(timing_order({"repeat": {"count": 1}}))
    assert line.single and line.per_day is None and line.problem is None
    assert line.daily_mg == 10


def test_no_timing_at_all_cannot_be_read():
    o = order({"doseAndRate": [{"doseQuantity": qty(10, "mg", "mg")}]})
    line = line_of(o)
    assert line.problem and "frequency" in line.problem


PRN_CASES = [
    pytest.param({"timing": {"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}}},
                 Fraction(40), id="prn-frequency-only"),
    pytest.param({"maxDosePerPeriod": ratio(30, "mg", 1, "d")}, Fraction(30),
                 id="prn-maxDosePerPeriod-only"),
    # clinical-rules section 1 (round 2): both are limits, so the smaller is the most allowed
    pytest.param({"timing": {"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}},
                  "maxDosePerPeriod": ratio(60, "mg", 1, "d")}, Fraction(30),
                 id="prn-max-larger-than-frequency-gives-frequency"),
    pytest.param({"timing": {"repeat": {"frequency": 1, "period": 4, "periodUnit": "h"}},
                  "maxDosePerPeriod": ratio(30, "mg", 1, "d")}, Fraction(30),
                 id="prn-frequency-larger-than-max-gives-max"),
    # a cap over a week: amount / 7 on its own, never lowering dose x frequency
    pytest.param({"maxDosePerPeriod": ratio(140, "mg", 1, "wk")}, Fraction(20),
                 id="prn-max-per-week-only-is-per-day"),
    pytest.param({"timing": {"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}},
                  "maxDosePerPeriod": ratio(70, "mg", 1, "wk")}, Fraction(30),
                 id="prn-max-per-week-does-not-lower-frequency"),
    pytest.param({"timing": {"repeat": {"frequency": 1, "frequencyMax": 2, "period": 4,
                                        "periodUnit": "h"}}}, Fraction(120),
                 id="prn-frequencyMax"),
    pytest.param({"maxDosePerPeriod": ratio(10, "mg", 12, "h")}, Fraction(20),
                 id="prn-max-per-12h"),
]


@pytest.mark.parametrize(("extra", "daily"), PRN_CASES)
def test_as_needed_uses_the_most_the_order_allows(extra, daily):
    d = {"doseAndRate": [{"doseQuantity": qty(10, "mg", "mg")}], "asNeededBoolean": True, **extra}
    line = line_of(order(d))
    assert line.prn
    assert line.daily_mg == daily


def test_as_needed_codeable_concept_counts_as_prn():
    d = {"doseAndRate": [{"doseQuantity": qty(10, "mg", "mg")}],
         "asNeededCodeableConcept": {"text": "spasm"},
         "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}}
    line = line_of(order(d))
    assert line.prn and line.daily_mg == 20


def test_as_needed_with_neither_has_no_daily_dose():
    d = {"doseAndRate": [{"doseQuantity": qty(10, "mg", "mg")}], "asNeededBoolean": True}
    line = line_of(order(d))
    assert line.daily_mg is None
    assert line.problem_rule == "order.prn-no-max"


def test_lines_without_sequence_add_up():
    read = facts(order(dosage(10, "mg", None, timing={"code": {"text": "AM"}}),
                       dosage(20, "mg", None, timing={"code": {"text": "BED"}})))
    assert len(read.steps) == 1
    assert read.steps[0].daily_mg == 30
    assert read.steps[0].scheduled_per_day == 2


def test_lines_with_the_same_sequence_add_up():
    read = facts(order(dosage(10, "mg", 1, sequence=1), dosage(20, "mg", 1, sequence=1)))
    assert len(read.steps) == 1 and read.steps[0].daily_mg == 30


def test_different_sequences_are_steps():
    read = facts(order(dosage(5, "mg", 3, sequence=1), dosage(10, "mg", 3, sequence=2)))
    assert [s.daily_mg for s in read.steps] == [15, 30]


# --- time arithmetic ----------------------------------------------------------------------

def test_datetime_without_offset_is_read_in_the_check_time_offset():
    plus2 = timezone(timedelta(hours=2))
    o = order(dosage(), authoredOn="2026-11-25T08:00:00")
    body = parameters(o, check_time="2026-11-25T10:00:00+02:00")
    _res, req, outcome = check_body(body, NOW, "us", load())
    assert req.check_time.utcoffset() == timedelta(hours=2)
    assert outcome.orders[0].start == datetime(2026, 11, 25, 8, tzinfo=plus2)


def test_datetime_without_offset_and_check_time_without_offset_is_utc():
    o = order(dosage(), authoredOn="2026-11-25T08:00:00")
    body = parameters(o, check_time="2026-11-25T10:00:00")
    _res, _req, outcome = check_body(body, NOW, "us", load())
    assert outcome.orders[0].start == datetime(2026, 11, 25, 8, tzinfo=UTC)


def test_date_without_time_is_midnight():
    plus2 = timezone(timedelta(hours=2))
    o = order(dosage(), authoredOn="2026-11-20")
    body = parameters(o, check_time="2026-11-25T10:00:00+02:00")
    _res, _req, outcome = check_body(body, NOW, "us", load())
    assert outcome.orders[0].start == datetime(2026, 11, 20, tzinfo=plus2)


def test_bounds_period_start_wins_over_authored_on():
    d = dosage()
    d["timing"]["repeat"]["boundsPeriod"] = {"start": "2026-11-26T08:00:00Z"}
    o = order(d, authoredOn="2026-11-25T08:00:00Z")
    assert facts(o).start == datetime(2026, 11, 26, 8, tzinfo=UTC)


def test_no_start_means_the_check_time():
    o = order(dosage())
    del o["authoredOn"]
    assert facts(o).start == NOW.replace(hour=10)


def test_partial_dates_are_ranges():
    r = parse_datetime_range("1950-06")
    assert r is not None
    assert r.low == datetime(1950, 6, 1, tzinfo=UTC) and r.high == datetime(1950, 7, 1, tzinfo=UTC)
    assert parse_datetime_range("2026-13-01") is None
    assert parse_datetime_range("not a date") is None


# --- route ----------------------------------------------------------------------------------

def route_order(route: dict[str, Any] | None, concept: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    d = dosage(10, "mg", 3)
    if route is not None:
        d["route"] = route
    return order(d, concept=concept)


ROUTE_CASES = [
    pytest.param({"coding": [{"system": SNOMED, "code": "26643006"}]}, None, "oral",
                 id="coded-oral"),
    pytest.param({"coding": [{"system": SNOMED, "code": "127492001"}]}, None, "oral",
                 id="coded-gastrostomy-is-oral"),
    pytest.param({"coding": [{"system": SNOMED, "code": "72607000"}]}, None, "intrathecal",
                 id="coded-intrathecal"),
    pytest.param({"text": "IT"}, None, "intrathecal", id="text-IT"),
    pytest.param({"text": "Intrathecal via pump"}, None, "intrathecal", id="text-intrathecal"),
    pytest.param({"text": "by mouth, take it with food"}, None, "oral",
                 id="text-with-the-word-it-is-oral"),
    pytest.param({"text": "PO"}, baclofen_concept("baclofen 2 mg/mL injection"), "oral",
                 id="oral-text-not-overridden-by-product"),
    pytest.param({"coding": [{"system": SNOMED, "code": "26643006"}]},
                 baclofen_concept("baclofen 0.05 MG/ML Injection"), "oral",
                 id="coded-oral-not-overridden-by-product"),
    pytest.param(None, baclofen_concept("baclofen 0.5 MG/ML Intrathecal Solution"),
                 "intrathecal", id="no-route-intrathecal-product"),
    pytest.param(None, baclofen_concept("baclofen 2 MG/ML Injection"), "intrathecal",
                 id="no-route-injection-product"),
    pytest.param(None, baclofen_concept("baclofen 1 MG/ML Oral Solution"), "oral",
                 id="no-route-strength-alone-never-decides"),
]


@pytest.mark.parametrize(("route", "concept", "expected"), ROUTE_CASES)
def test_route(route, concept, expected):
    o = route_order(route, concept)
    assert route_of(o, o["medicationCodeableConcept"], None, load()) == expected
