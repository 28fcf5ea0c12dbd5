"""Stopping and cutting baclofen (clinical-rules sections 6 and 7): stops, cuts, IT titration."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.builders import by_rule, dosage, it_dose, it_order, order, parameters, rule_ids
from tests.support.checks import run


def running(daily_per_dose: float, start: str, id: str = "cur", status: str = "active",
            per_day: int = 3, **kw: Any) -> dict[str, Any]:
    d = dosage(daily_per_dose, "mg", per_day)
    d["timing"]["repeat"]["boundsPeriod"] = {"start": start}
    return order(d, id=id, status=status, authoredOn=start, **kw)


def stop_of(o: dict[str, Any]) -> dict[str, Any]:
    return {**o, "status": "stopped"}


STOP_CASES = [
    # id, regimen start, dose per administration (x3/day), expected severity (None: no finding)
    ("on_30_days_30mg_moderate", "2026-10-26T10:00:00Z", 10, "moderate"),
    ("on_exactly_14_days", "2026-11-11T10:00:00Z", 10, "moderate"),
    ("on_13_days_no_finding", "2026-11-12T10:00:00Z", 10, None),
    ("on_60mg_high", "2026-01-01T10:00:00Z", 20, "high"),
    ("on_57_5mg_moderate", "2026-01-01T10:00:00Z", 19.1666, "moderate"),
]


@pytest.mark.parametrize("case", STOP_CASES, ids=[c[0] for c in STOP_CASES])
def test_stop_without_taper(case: tuple[Any, ...]) -> None:
    _id, start, dose, severity = case
    result = run(parameters(stop_of(running(dose, start))))
    if severity is None:
        assert "withdrawal.abrupt" not in rule_ids(result)
        return
    di = by_rule(result, "withdrawal.abrupt")
    assert di["severity"] == severity
    assert "days on therapy" in di["detail"]


def test_stop_with_unknown_start_fires() -> None:
    o = order(dosage(10, "mg", 3), id="cur", status="stopped")
    del o["authoredOn"]
    hist = {"resourceType": "MedicationStatement", "id": "st1", "status": "active",
            "subject": {"reference": "Patient/pat-1"},
            "medicationCodeableConcept": {"text": "baclofen 10 mg tablet"}}
    result = run(parameters(o, context=[hist]))
    di = by_rule(result, "withdrawal.abrupt")
    assert "unknown" in di["detail"]


def test_stop_replaced_by_a_new_order_is_not_abrupt() -> None:
    old = running(10, "2026-09-01T10:00:00Z")
    new = order(dosage(5, "mg", 3), id="new", priorPrescription={
        "reference": "MedicationRequest/cur"})
    result = run(parameters(stop_of(old), new))
    assert "withdrawal.abrupt" not in rule_ids(result)


CUT_CASES = [
    ("cut_30_to_14_fires", 10, 14 / 3, "moderate"),
    ("cut_30_to_15_exactly_half_no", 10, 5, None),
    ("cut_60_to_20_high", 20, 20 / 3, "high"),
]


@pytest.mark.parametrize("case", CUT_CASES, ids=[c[0] for c in CUT_CASES])
def test_cut_below_half(case: tuple[Any, ...]) -> None:
    _id, before, after, severity = case
    current = running(before, "2026-09-01T10:00:00Z")
    new = order(dosage(round(after, 4), "mg", 3), id="new")
    result = run(parameters(new, context=[current]))
    if severity is None:
        assert "withdrawal.abrupt" not in rule_ids(result)
    else:
        di = by_rule(result, "withdrawal.abrupt")
        assert di["severity"] == severity
        assert [r["reference"] for r in di["implicated"]] == [
            "MedicationRequest/new", "MedicationRequest/cur"]


def it_running(ug: float, start: str, id: str = "it-cur", status: str = "active"
               ) -> dict[str, Any]:
    d = it_dose(ug, frequency=1, period=1, periodUnit="d",
                boundsPeriod={"start": start})
    return it_order(d, id=id, status=status, authoredOn=start)


def test_intrathecal_stop_is_high() -> None:
    result = run(parameters(stop_of(it_running(400, "2026-06-01T10:00:00Z"))))
    di = by_rule(result, "intrathecal.abrupt-stop")
    assert di["severity"] == "high"
    assert not any(r.startswith("withdrawal.") for r in rule_ids(result))


@pytest.mark.parametrize("after,rule,severity", [
    (300, "intrathecal.abrupt-stop", "moderate"),   # 400 -> 300: 25% cut
    (320, None, None),                              # 20% cut: not more than 20%
    (530, "intrathecal.titration", "moderate"),     # +32.5%
    (520, None, None),                              # +30% exactly
], ids=["it_cut_25pct", "it_cut_20pct_edge", "it_rise_32_5pct", "it_rise_30pct_edge"])
def test_intrathecal_changes(after: float, rule: str | None, severity: str | None) -> None:
    current = it_running(400, "2026-06-01T10:00:00Z")
    new = it_order(it_dose(after, frequency=1, period=1, periodUnit="d"), id="it-new")
    result = run(parameters(new, context=[current]))
    changes = {r for r in rule_ids(result)
               if r in {"intrathecal.abrupt-stop", "intrathecal.titration"}}
    assert changes == ({rule} if rule else set())
    if rule:
        assert by_rule(result, rule)["severity"] == severity


def test_intrathecal_raise_within_24_hours() -> None:
    current = it_running(400, "2026-11-25T00:00:00Z")
    new = it_order(it_dose(440, frequency=1, period=1, periodUnit="d"), id="it-new")
    result = run(parameters(new, context=[current]))
    di = by_rule(result, "intrathecal.titration")
    assert "hours" in di["detail"]


def test_cancelled_order_never_taken_is_not_a_stop() -> None:
    o = order(dosage(10, "mg", 3), id="c1", status="cancelled")
    result = run(parameters(o))
    assert rule_ids(result) == []
