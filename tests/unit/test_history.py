"""service/facts/history.py and service/clinical/therapy.py: regimens from requests,
statements and dispenses; the current regimen; new therapy; time on therapy with gaps shorter
than 14 days joined."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction as F
from typing import Any

import pytest

from service.clinical.therapy import current_regimen, level_at, time_on_therapy
from service.facts.history import build_history
from service.facts.orders import read_order
from service.knowledge import load
from service.model import MedicationHistory
from tests.support.builders import dosage, order
from tests.support.context_builders import dispense, history_request, statement

KB = load()
NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def _resolve(ref: Any, within: Any) -> None:
    return None


def checked(**kw: Any) -> Any:
    o = order(**kw)
    return read_order(o, f"MedicationRequest/{o['id']}", _resolve, KB, NOW, checked=True)


def history(*resources: dict[str, Any], **kw: Any) -> MedicationHistory:
    pairs = [(f"{r['resourceType']}/{r['id']}", r) for r in resources]
    return build_history(pairs, checked(**kw), _resolve, KB, NOW)


def test_active_request_is_current_and_not_new_therapy():
    h = history(history_request(10, 3, start="2026-11-01"))
    assert h.current is not None and h.current.ref == "MedicationRequest/old-1"
    assert h.current.daily_mg == 30 and h.current.route == "oral"
    assert h.current.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert h.current.end is None and h.current.end_basis == "open"
    assert not h.new_therapy


def test_no_history_is_new_therapy():
    h = history()
    assert h.current is None and h.new_therapy and h.regimens == ()


@pytest.mark.parametrize(
    "end,current",
    [
        pytest.param("2026-11-15", True, id="ended_9_days_before_restart_within_14"),
        pytest.param("2026-11-11T09:00:00Z", True, id="ended_exactly_14_days_before"),
        pytest.param("2026-11-11T08:59:00Z", False, id="ended_just_over_14_days_before"),
        pytest.param("2026-10-01", False, id="ended_long_ago_new_therapy"),
    ],
)
def test_restart_within_14_days(end, current):
    # the checked order starts at its authoredOn, 2026-11-25T09:00Z
    h = history(history_request(10, 3, start="2026-10-01", end=end, status="completed"))
    assert (h.current is not None) is current
    assert h.new_therapy is not current


def test_stopped_order_without_end_ends_at_last_updated():
    h = history(history_request(10, 3, status="stopped", start="2026-10-01",
                                last_updated="2026-11-20T08:00:00Z"))
    assert h.current is not None
    assert h.current.end == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert h.current.end_basis == "meta.lastUpdated"


def test_stopped_order_without_end_or_sign_of_supply_ends_at_its_start():
    # clinical-rules section 2 (round 2): it says nothing about use after it was written
    h = history(history_request(10, 3, status="stopped", start="2026-10-01"))
    assert h.current is None
    assert h.regimens[0].end == datetime(2026, 10, 1, tzinfo=UTC)
    assert h.regimens[0].end_basis == "its start (no end and no sign of supply)"


def test_entered_in_error_is_not_history_but_every_other_status_is():
    h = history(history_request(id="a", status="entered-in-error"),
                history_request(id="b", status="cancelled", start="2026-11-02"),
                history_request(id="c", status="on-hold", start="2026-11-03"),
                history_request(id="d", status="draft", start="2026-11-04"))
    assert [r.ref for r in h.regimens] == ["MedicationRequest/b", "MedicationRequest/c",
                                           "MedicationRequest/d"]


def test_cancelled_request_counts_only_with_a_start_in_the_past():
    never_started = history_request(id="n", status="cancelled", start=None,
                                    authored="2026-11-20T09:00:00Z")
    started = history_request(id="s", status="cancelled", start="2026-11-10")
    h = history(never_started, started)
    assert [r.ref for r in h.regimens] == ["MedicationRequest/s"]


def test_other_drugs_are_not_history():
    other = history_request(id="x")
    other["medicationCodeableConcept"] = {"text": "tizanidine 4 MG Oral Tablet"}
    assert history(other).regimens == ()


def test_dispenses_only():
    h = history(dispense(10, 3, handed="2026-11-01T12:00:00Z", days_supply=30))
    assert h.current is not None and h.current.source == "MedicationDispense"
    assert h.current.daily_mg == 30
    assert h.current.end == datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert h.current.end_basis == "whenHandedOver + daysSupply"


def test_dispense_length_from_quantity_when_no_days_supply():
    # 90 tablets of 10 mg at 30 mg/day = 30 days
    h = history(dispense(10, 3, handed="2026-10-01T00:00:00Z", days_supply=None, quantity=90))
    (regimen,) = h.regimens
    assert regimen.end == datetime(2026, 10, 31, tzinfo=UTC)
    assert regimen.end_basis == "whenHandedOver + quantity / daily dose"
    assert h.current is None  # ended 25 days before the checked order


def test_dispense_without_handover_is_not_exposure():
    assert history(dispense(handed=None)).regimens == ()


def test_cancelled_dispense_is_not_exposure():
    assert history(dispense(status="cancelled")).regimens == ()


def test_statement_with_period():
    h = history(statement(5, 3, start="2026-10-01", end="2026-11-20"))
    assert h.current is not None and h.current.source == "MedicationStatement"
    assert h.current.daily_mg == 15
    assert h.current.end == datetime(2026, 11, 21, tzinfo=UTC)  # a date end includes the day


def test_statement_not_taken_is_not_exposure():
    assert history(statement(status="not-taken")).regimens == ()


def test_current_is_the_newest_and_excludes_the_checked_order():
    h = history(history_request(10, 3, id="older", start="2026-10-01"),
                history_request(20, 3, id="newer", start="2026-11-10"),
                history_request(40, 3, id="ord-1", start="2026-11-25"))
    assert h.current is not None and h.current.ref == "MedicationRequest/newer"


def test_regimen_starting_after_the_checked_order_is_not_current():
    h = history(history_request(10, 3, start="2026-12-01"))
    assert h.current is None


def test_intrathecal_regimen_is_current_intrathecal_only():
    it = history_request(id="it")
    it["dosageInstruction"][0]["route"] = {"coding": [{"system": "http://snomed.info/sct",
                                                       "code": "72607000"}]}
    h = history(it)
    assert h.current is None
    assert h.current_intrathecal is not None and h.current_intrathecal.route == "intrathecal"


def test_level_at_follows_a_plan():
    plan = history_request(id="plan", start=None, authored="2026-11-20T09:00:00Z")
    plan["dosageInstruction"] = [
        {**dosage(5, "mg", 3), "sequence": 1},
        {**dosage(10, "mg", 3), "sequence": 2},
    ]
    plan["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"] = {
        "value": 3, "unit": "d", "code": "d", "system": "http://unitsofmeasure.org"}
    h = history(plan)
    assert h.current is not None
    early = level_at(h.current, datetime(2026, 11, 21, tzinfo=UTC))
    assert early.daily_mg == 15 and early.step_index == 0
    later = level_at(h.current, datetime(2026, 11, 25, 9, tzinfo=UTC))
    assert later.daily_mg == 30 and later.step_index == 1
    assert later.since == datetime(2026, 11, 23, 9, tzinfo=UTC)


# --- time on therapy ------------------------------------------------------------------------

def _regimens(*resources: dict[str, Any]) -> Any:
    return history(*resources).regimens


def test_time_on_therapy_single_regimen():
    t = time_on_therapy(_regimens(history_request(start="2026-11-01")), "oral", NOW, KB)
    assert t is not None and t.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert t.days == F(24) + F(10, 24)


@pytest.mark.parametrize(
    "gap_end,joined",
    [
        pytest.param("2026-10-18T00:00:00Z", True, id="gap_13_days_joined"),
        pytest.param("2026-10-17T00:00:00Z", False, id="gap_exactly_14_days_not_joined"),
    ],
)
def test_time_on_therapy_joins_gaps_shorter_than_14_days(gap_end, joined):
    first = history_request(id="first", start="2026-09-01T00:00:00Z", end=gap_end,
                            status="completed")
    # bare-date bounds end includes the day: give instants to be exact
    second = history_request(id="second", start="2026-10-31T00:00:00Z")
    t = time_on_therapy(_regimens(first, second), "oral", NOW, KB)
    assert t is not None
    expected_start = datetime(2026, 9, 1, tzinfo=UTC) if joined else datetime(
        2026, 10, 31, tzinfo=UTC)
    assert t.start == expected_start
    assert len(t.refs) == (2 if joined else 1)


def test_time_on_therapy_unknown_start():
    r = history_request(start=None)
    t = time_on_therapy(_regimens(r), "oral", NOW, KB)
    assert t is not None and t.start is None and t.days is None


def test_time_on_therapy_none_when_exposure_ended_long_ago():
    r = history_request(start="2026-01-01", end="2026-03-01", status="completed")
    assert time_on_therapy(_regimens(r), "oral", NOW, KB) is None


def test_current_regimen_function_by_route():
    regs = _regimens(history_request(start="2026-11-01"))
    assert current_regimen(regs, NOW, "oral", KB) is not None
    assert current_regimen(regs, NOW, "intrathecal", KB) is None
