"""Property tests for clinical-rules section 11 on the kidney rules: a lower renal value never
yields a milder renal finding; a higher dose never yields a milder or missing renal finding;
the same input always yields the same findings."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.findings import SEVERITY_RANK
from tests.support.builders import dosage, issues, order, parameters, patient
from tests.support.checks import run
from tests.support.context_builders import condition, creatinine, egfr, height, weight

RENAL = ("renal.dose-band", "renal.dialysis", "renal.unknown", "renal.stale", "geriatric.renal")
MERGED_INTO = ("renal.dose-band", "renal.dialysis")

BIRTH_DATES = st.sampled_from(["1950-03-01", "1961-11-25", "1970-05-01", "1990-01-01",
                               "2019-06-01", "2012-02-01", "1955"])
RENAL_VALUES = st.one_of(
    st.integers(min_value=50, max_value=1300).map(lambda n: n / 10),
    st.floats(min_value=5, max_value=130, allow_nan=False, allow_infinity=False),
)
DOSES = st.integers(min_value=1, max_value=16).map(lambda n: n * 2.5)
FREQUENCIES = st.integers(min_value=1, max_value=4)
WHEN = st.sampled_from(["2026-11-20", "2026-07-01"])   # recent or stale
EXTRA = st.sampled_from([[], [condition("N18.3")]])
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def renal_findings(birth: str, value: float, dose: float, freq: int, when: str,
                   extra: list[dict[str, Any]], profile: str = "us") -> dict[str, str]:
    body = parameters(order(dosage(dose, "mg", freq)), pat=patient(birth),
                      context=[egfr(value, when=when, id="e-1"), *extra], profile=profile)
    result = run(body, profile=profile)
    return {di["identifier"][0]["value"]: di["severity"] for di in issues(result)
            if di["identifier"][0]["value"] in RENAL}


def worst(found: dict[str, str]) -> int:
    return max((SEVERITY_RANK[s] for s in found.values()), default=0)


def not_milder(before: dict[str, str], after: dict[str, str]) -> bool:
    """Every finding of ``before`` is in ``after`` at the same or a higher severity;
    geriatric.renal may have been merged into a dose-band or dialysis finding."""
    for rule, severity in before.items():
        rank = SEVERITY_RANK[severity]
        if rule in after and SEVERITY_RANK[after[rule]] >= rank:
            continue
        if rule == "geriatric.renal" and any(
            r in after and SEVERITY_RANK[after[r]] >= rank for r in MERGED_INTO
        ):
            continue
        return False
    return True


@SETTINGS
@given(birth=BIRTH_DATES, a=RENAL_VALUES, b=RENAL_VALUES, dose=DOSES, freq=FREQUENCIES,
       when=WHEN, extra=EXTRA, profile=st.sampled_from(["us", "uk"]))
def test_lower_renal_value_never_milder(birth, a, b, dose, freq, when, extra, profile):
    high, low = max(a, b), min(a, b)
    at_high = renal_findings(birth, high, dose, freq, when, extra, profile)
    at_low = renal_findings(birth, low, dose, freq, when, extra, profile)
    assert worst(at_low) >= worst(at_high), (high, at_high, low, at_low)
    ceiling = {r: s for r, s in at_high.items() if r in ("renal.dose-band", "renal.dialysis",
                                                         "geriatric.renal")}
    assert worst(at_low) >= worst(ceiling)


@SETTINGS
@given(birth=BIRTH_DATES, value=RENAL_VALUES, d1=DOSES, d2=DOSES, freq=FREQUENCIES, when=WHEN,
       extra=EXTRA)
def test_higher_dose_never_milder(birth, value, d1, d2, freq, when, extra):
    small, big = min(d1, d2), max(d1, d2)
    at_small = renal_findings(birth, value, small, freq, when, extra)
    at_big = renal_findings(birth, value, big, freq, when, extra)
    assert not_milder(at_small, at_big), (small, at_small, big, at_big)


@settings(max_examples=20, deadline=None)
@given(birth=BIRTH_DATES, value=RENAL_VALUES, dose=DOSES, freq=FREQUENCIES, when=WHEN)
def test_same_input_same_findings(birth, value, dose, freq, when):
    first = renal_findings(birth, value, dose, freq, when, [])
    assert renal_findings(birth, value, dose, freq, when, []) == first


@SETTINGS
@given(birth=st.sampled_from(["1940-01-01", "1955-05-01", "1970-05-01", "1999-12-31"]),
       c1=st.integers(min_value=3, max_value=80).map(lambda n: n / 10),
       c2=st.integers(min_value=3, max_value=80).map(lambda n: n / 10),
       kg=st.integers(min_value=35, max_value=160), cm=st.sampled_from([None, 150, 175]),
       dose=DOSES, freq=FREQUENCIES, gender=st.sampled_from(["male", "female", "unknown"]))
def test_higher_creatinine_never_milder(birth, c1, c2, kg, cm, dose, freq, gender):
    def found(scr: float) -> dict[str, str]:
        ctx = [creatinine(scr, id="cr"), weight(kg, id="w")]
        if cm:
            ctx.append(height(cm, id="h"))
        body = parameters(order(dosage(dose, "mg", freq)), pat=patient(birth, gender),
                          context=ctx)
        return {di["identifier"][0]["value"]: di["severity"] for di in issues(run(body))
                if di["identifier"][0]["value"] in RENAL}
    low, high = min(c1, c2), max(c1, c2)
    assert worst(found(high)) >= worst(found(low))
