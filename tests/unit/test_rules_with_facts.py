"""The rules called directly with typed facts (tests/support/facts.py): no FHIR JSON, no facts
stage, no app. One row per clinical case: the facts, the rule expected (or ``None``: the rule
must stay silent), its severity and the numbers its detail must carry.

The numbers are those of service/knowledge/baclofen.yaml: US labels 80 mg/day and 20 mg a dose
(oral.max-daily high above 100 mg/day); UK SmPC 100 mg/day and 25 mg (high above 120);
oral.probable-error from 80 mg a dose or 200 mg/day; oral.frequency from 30 mg/day in fewer
than 3 doses, or more than 4 doses a day; kidney bands mild 50-80 (cap 2/3 of the maximum),
moderate 30 to < 50 (1/2), severe < 30 (5 mg/day, high from 20 mg/day), dialysis (high above
5 mg/day); geriatric.renal from 65 years below 60 mL/min (high from 20 mg/day or below 30);
against the current regimen (the baclofen history): oral.titration-step above +15 mg/day
(moderate above +30), oral.titration-interval under 3 days (7 for the vulnerable),
withdrawal.abrupt for a cut to less than half after 14 days or more (high from 60 mg/day).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from service.findings import Finding
from service.model import DoseLine, OrderFacts
from service.rules import RuleContext, oral, titration, withdrawal
from service.rules import renal as renal_rules
from tests.support.facts import (
    T,
    by_rule,
    context,
    history,
    line,
    order,
    patient,
    regimen,
    renal,
)

Family = Callable[[RuleContext, OrderFacts], list[Finding]]


@dataclass(frozen=True)
class Case:
    lines: tuple[DoseLine, ...]
    rule: str
    severity: str | None                    # None: the rule must not fire
    numbers: tuple[str, ...] = ()
    profile: str = "us"
    age: int = 50
    ml_min: int | None = None
    dialysis: tuple[str, ...] = ()


def run(family: Family, case: Case) -> dict[str, Finding]:
    o = order(*case.lines)
    ctx = context(o, profile=case.profile, patient_facts=patient(case.age),
                  renal_facts=renal(case.ml_min, dialysis=case.dialysis))
    return by_rule(family(ctx, o))


ORAL = [
    # oral.max-daily: the daily dose against the profile maximum
    pytest.param(Case((line(20, 4),), "oral.max-daily", None), id="us_80mg_day_at_the_cap"),
    pytest.param(Case((line(25, 4),), "oral.max-daily", "moderate", ("100 mg/day", "80 mg/day")),
                 id="us_100mg_day_moderate"),
    pytest.param(Case((line(30, 4),), "oral.max-daily", "high", ("120 mg/day", "80 mg/day")),
                 id="us_120mg_day_high_above_100"),
    pytest.param(Case((line(25, 4),), "oral.max-daily", None, profile="uk"),
                 id="uk_100mg_day_at_the_cap"),
    pytest.param(Case((line(30, 4),), "oral.max-daily", "moderate", ("120 mg/day", "100 mg/day"),
                      profile="uk"), id="uk_120mg_day_moderate_not_above_120"),
    # oral.max-single: one dose against the profile's single-dose maximum
    pytest.param(Case((line(20, 4),), "oral.max-single", None), id="us_20mg_dose_at_the_cap"),
    pytest.param(Case((line(30, 3),), "oral.max-single", "moderate", ("30 mg", "20 mg")),
                 id="us_30mg_dose_moderate"),
    pytest.param(Case((line(25, 4),), "oral.max-single", None, profile="uk"),
                 id="uk_25mg_dose_at_the_cap"),
    # oral.probable-error: the overdose range
    pytest.param(Case((line(80, 1),), "oral.probable-error", "high", ("80 mg",)),
                 id="80mg_single_dose"),
    pytest.param(Case((line(50, 4),), "oral.probable-error", "high", ("200 mg/day",)),
                 id="200mg_day"),
    pytest.param(Case((line(45, 4),), "oral.probable-error", None), id="180mg_day_below_200"),
    # oral.frequency: 30 mg/day or more in fewer than 3 doses; more than 4 doses a day
    pytest.param(Case((line(15, 2),), "oral.frequency", "low", ("30 mg/day", "twice a day")),
                 id="30mg_day_twice_a_day"),
    pytest.param(Case((line(10, 2),), "oral.frequency", None), id="20mg_day_twice_a_day_is_fine"),
    pytest.param(Case((line(5, 5),), "oral.frequency", "low", ("5 administrations a day",)),
                 id="five_doses_a_day"),
]

RENAL = [
    # renal.dose-band: the band's cap of the profile maximum (80 mg/day, US)
    pytest.param(Case((line(20, 3),), "renal.dose-band", "moderate",
                      ("CrCl 65 mL/min", "mild band", "53.3 mg/day", "60 mg/day"), ml_min=65),
                 id="mild_60mg_day_above_two_thirds"),
    pytest.param(Case((line(10, 5),), "renal.dose-band", None, ml_min=65),
                 id="mild_50mg_day_within_two_thirds"),
    pytest.param(Case((line(15, 3),), "renal.dose-band", "moderate",
                      ("moderate band", "cap 40 mg/day", "45 mg/day"), ml_min=40),
                 id="moderate_45mg_day_above_half"),
    pytest.param(Case((line(10, 4),), "renal.dose-band", None, ml_min=40),
                 id="moderate_40mg_day_at_half"),
    pytest.param(Case((line(10, 3),), "renal.dose-band", "high",
                      ("severe band", "cap 5 mg/day", "30 mg/day"), ml_min=20),
                 id="severe_30mg_day_high_from_20"),
    pytest.param(Case((line(5, 2),), "renal.dose-band", "moderate", ("10 mg/day",), ml_min=20),
                 id="severe_10mg_day_moderate"),
    pytest.param(Case((line(20, 4),), "renal.dose-band", None, ml_min=81),
                 id="normal_band_no_cap"),
    # renal.dialysis: any oral baclofen; high above 5 mg/day
    pytest.param(Case((line(5, 3),), "renal.dialysis", "high", ("15 mg/day", "5 mg/day"),
                      dialysis=("Dialysis (N18.6)",)), id="dialysis_15mg_day_high"),
    pytest.param(Case((line("5/2", 2),), "renal.dialysis", "moderate", ("2.5 mg", "5 mg/day"),
                      dialysis=("Dialysis (N18.6)",)), id="dialysis_5mg_day_moderate"),
    pytest.param(Case((line(5, 1),), "renal.dialysis", "moderate", ("CrCl 12 mL/min",),
                      ml_min=12), id="value_below_15_is_end_stage"),
    # geriatric.renal: 65 or older, below 60 mL/min
    pytest.param(Case((line(5, 3),), "geriatric.renal", "moderate",
                      ("Age 70 years", "CrCl 55 mL/min", "15 mg/day"), age=70, ml_min=55),
                 id="older_55ml_min_15mg_day_moderate"),
    pytest.param(Case((line(10, 3),), "geriatric.renal", "high", ("30 mg/day",), age=70,
                      ml_min=55), id="older_55ml_min_30mg_day_high_from_20"),
    pytest.param(Case((line(5, 1),), "geriatric.renal", "high", ("CrCl 25 mL/min",), age=70,
                      ml_min=25), id="older_below_30ml_min_high"),
    pytest.param(Case((line(5, 3),), "geriatric.renal", None, age=64, ml_min=55),
                 id="age_64_not_older"),
    pytest.param(Case((line(5, 3),), "geriatric.renal", None, age=70, ml_min=60),
                 id="older_at_60ml_min"),
    # renal.unknown: no kidney value for an older patient
    pytest.param(Case((line(5, 3),), "renal.unknown", "low", age=70), id="older_no_value"),
    pytest.param(Case((line(5, 3),), "renal.unknown", None, age=40), id="younger_no_value"),
]


@pytest.mark.parametrize("case", ORAL)
def test_oral_rules(case: Case) -> None:
    assert_case(case, run(oral.rules, case))


@pytest.mark.parametrize("case", RENAL)
def test_renal_rules(case: Case) -> None:
    assert_case(case, run(renal_rules.rules, case))


def assert_case(case: Case, found: dict[str, Finding]) -> None:
    if case.severity is None:
        assert case.rule not in found, found[case.rule].detail
        return
    assert case.rule in found, f"{case.rule} did not fire; found {sorted(found)}"
    finding = found[case.rule]
    assert finding.severity == case.severity, finding.detail
    for number in case.numbers:
        assert number in finding.detail, f"{number!r} not in {finding.detail!r}"


def test_the_finding_carries_the_numbers_it_judged() -> None:
    """Beyond the text: the judged daily dose and limit, exact, and the kidney value."""
    o = order(line(15, 3))
    ctx = context(o, renal_facts=renal(40))
    finding = by_rule(renal_rules.rules(ctx, o))["renal.dose-band"]
    assert (finding.judged.daily_mg, finding.judged.limit) == (45, 40)
    assert finding.judged.renal_ml_min == 40
    assert finding.evidence == ("Observation/cr-1",)


@dataclass(frozen=True)
class Change:
    """A new order against the current regimen, taken for ``days`` so far."""

    days: int
    current: DoseLine
    new: DoseLine
    rule: str
    severity: str | None
    numbers: tuple[str, ...] = ()
    age: int = 50


CHANGES = [
    pytest.param(Change(60, line(5, 3), line("12.5", 3), "oral.titration-step", "low",
                        ("15 mg/day", "37.5 mg/day", "22.5 mg/day")), id="step_up_22.5mg_day"),
    pytest.param(Change(60, line(5, 3), line(20, 3), "oral.titration-step", "moderate",
                        ("45 mg/day",)), id="step_up_45mg_day_moderate"),
    pytest.param(Change(60, line(5, 3), line(10, 3), "oral.titration-step", None),
                 id="step_up_15mg_day_is_the_usual_step"),
    pytest.param(Change(1, line(5, 3), line(10, 3), "oral.titration-interval", "moderate",
                        ("1 days", "3 days")), id="raised_after_1_day"),
    pytest.param(Change(5, line(5, 3), line(10, 3), "oral.titration-interval", None),
                 id="raised_after_5_days_adult"),
    pytest.param(Change(5, line(5, 3), line(10, 3), "oral.titration-interval", "low",
                        ("5 days", "7 days"), age=70), id="raised_after_5_days_older"),
    pytest.param(Change(60, line(20, 3), line(5, 2), "withdrawal.abrupt", "high",
                        ("60 mg/day", "10 mg/day", "60 days")), id="cut_60_to_10mg_day_high"),
    pytest.param(Change(60, line(10, 3), line(5, 2), "withdrawal.abrupt", "moderate",
                        ("30 mg/day", "10 mg/day")), id="cut_30_to_10mg_day_moderate"),
    pytest.param(Change(60, line(10, 3), line(5, 3), "withdrawal.abrupt", None),
                 id="cut_to_exactly_half"),
    pytest.param(Change(10, line(20, 3), line(5, 2), "withdrawal.abrupt", None),
                 id="cut_after_10_days_on_therapy"),
]


@pytest.mark.parametrize("change", CHANGES)
def test_changes_against_the_current_regimen(change: Change) -> None:
    since = T - timedelta(days=change.days)
    current = regimen(order(change.current, ref="MedicationRequest/old-1", start=since),
                      start=since)
    new = order(change.new)
    ctx = context(new, patient_facts=patient(change.age),
                  history_facts=history(current, current=current))
    found = by_rule(titration.rules(ctx, new) + withdrawal.cut_rules(ctx, new))
    assert_case(Case((change.new,), change.rule, change.severity, change.numbers), found)
