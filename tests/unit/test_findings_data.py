"""Findings carry their data (issue 14 item 3): the id, code and the numbers a rule judged are
fields of the Finding, and what renders or records a finding reads those fields."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction as F
from typing import Any

from service.checker import check_result
from service.findings import Judged, finding_id
from service.knowledge import load
from service.output.fhir import FINDING_SYSTEM, RULE_SYSTEM, ResultBundle
from tests.support.builders import dosage, order, parameters, patient
from tests.support.context_builders import egfr, history_request

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def _check(dose: float, freq: int, context: list[dict[str, Any]] | None = None
           ) -> ResultBundle:
    current = history_request(dose, freq, start="2026-09-01", id="cur")
    body = parameters(order(dosage(dose, "mg", freq)), pat=patient("1970-05-01"),
                      context=[current, *(context or [])])
    return check_result(body, NOW, "us", load())[0]


def test_each_finding_is_rendered_from_its_fields() -> None:
    result = _check(40, 4)
    assert result.issues
    kb = load()
    for e in result.issues:
        f = e.finding
        assert f.id == finding_id(f.rule_id, f.order_ref, f.dose_key, kb.version)
        assert e.resource["id"] == f"bc-{f.id}"
        assert e.resource["identifier"] == [{"system": RULE_SYSTEM, "value": f.rule_id},
                                            {"system": FINDING_SYSTEM, "value": f.id}]
        assert e.resource["severity"] == f.severity
        assert f.code == kb.rule(f.rule_id).code
        codings = e.resource["code"].get("coding", [])
        assert [c["code"] for c in codings] == ([f.code] if f.code else [])
        assert e.entry["resource"] is e.resource
    entries = [x["resource"] for x in result.bundle["entry"]
               if x["resource"]["resourceType"] == "DetectedIssue"]
    assert entries == [e.resource for e in result.issues]


def test_the_oral_ceiling_carries_the_daily_dose_and_the_limit() -> None:
    found = {e.finding.rule_id: e.finding for e in _check(40, 4).issues}
    judged = found["oral.max-daily"].judged
    assert (judged.daily_mg, judged.limit, judged.limit_unit) == (F(160), F(80), "mg/day")
    assert judged.renal_ml_min is None and judged.renal_kind is None


def test_the_kidney_band_carries_the_renal_value_and_its_kind() -> None:
    found = {e.finding.rule_id: e.finding for e in _check(20, 3, [egfr(40)]).issues}
    judged = found["renal.dose-band"].judged
    assert judged == Judged(daily_mg=F(60), limit=F(40), limit_unit="mg/day",
                            renal_ml_min=F(40), renal_kind="eGFR", renal_source="egfr")
