"""Section 11 invariants for intrathecal orders and the children's caps (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.builders import dosage, it_dose, it_order, order, parameters, patient
from tests.support.checks import run

SEVERITY = {None: 0, "low": 1, "moderate": 2, "high": 3}
CEILING_IT = ("intrathecal.max-daily", "intrathecal.bolus")
CEILING_CHILD = ("pediatric.age-cap", "pediatric.weight-cap")


def severities(result: dict[str, Any]) -> dict[str, str]:
    return {e["resource"]["identifier"][0]["value"]: e["resource"]["severity"]
            for e in result["entry"] if e["resource"]["resourceType"] == "DetectedIssue"}


doses_ug = st.integers(min_value=1, max_value=5000)
units = st.sampled_from(["ug", "mcg", "mg"])
shapes = st.sampled_from(["bolus", "daily", "twice"])


def it_body(value: float, unit: str, shape: str, born: str = "1980-01-01") -> dict[str, Any]:
    timing = {"bolus": {"count": 1},
              "daily": {"frequency": 1, "period": 1, "periodUnit": "d"},
              "twice": {"frequency": 2, "period": 1, "periodUnit": "d"}}[shape]
    return parameters(it_order(it_dose(value, unit, **timing)), pat=patient(born))


@settings(max_examples=60, deadline=None)
@given(doses_ug, units, shapes, st.sampled_from(["1980-01-01", "2023-05-05", "2015"]))
def test_intrathecal_never_yields_oral_renal_or_withdrawal(value: int, unit: str, shape: str,
                                                          born: str) -> None:
    result = run(it_body(value, unit, shape, born))
    for rule in severities(result):
        assert not rule.startswith(("oral.", "renal.", "withdrawal.", "units.")), rule


@settings(max_examples=60, deadline=None)
@given(doses_ug, st.integers(min_value=1, max_value=3000), shapes)
def test_higher_intrathecal_dose_never_milder(low: int, extra: int, shape: str) -> None:
    a = severities(run(it_body(low, "ug", shape)))
    b = severities(run(it_body(low + extra, "ug", shape)))
    for rule in CEILING_IT:
        assert SEVERITY[b.get(rule)] >= SEVERITY[a.get(rule)], (rule, low, extra)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=120), st.integers(min_value=1, max_value=80),
       st.sampled_from(["2021-03-03", "2016-03-03", "2010-03-03"]),
       st.sampled_from(["us", "uk"]))
def test_higher_child_dose_never_milder(low: int, extra: int, born: str, profile: str) -> None:
    def body(daily: int) -> dict[str, Any]:
        return parameters(order(dosage(daily / 4, "mg", 4)), pat=patient(born), profile=profile)

    a = severities(run(body(low), profile))
    b = severities(run(body(low + extra), profile))
    for rule in CEILING_CHILD:
        assert SEVERITY[b.get(rule)] >= SEVERITY[a.get(rule)], (rule, low, extra)


@settings(max_examples=30, deadline=None)
@given(doses_ug, units, shapes)
def test_same_input_same_findings(value: int, unit: str, shape: str) -> None:
    first = run(it_body(value, unit, shape))
    second = run(it_body(value, unit, shape))
    assert first == second
