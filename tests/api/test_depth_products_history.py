"""Issue 16, priority 1: baclofen and interacting medicines recognised by product, brand and
ATC code (clinical-rules sections 1 and 8), counting (sections 1 and 8), and a history that
fails closed (sections 2, 3 and 7). One row per rule and case; every row runs through both
front doors (native $check and CDS Hooks order-sign), stops through the native one only (no
hook carries a stop)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support import builders as b
from tests.support.doors import ago, assert_both, born, detail, native

ATC = "http://www.whocc.no/atc"
Scenario = tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]


def concept(text: str | None = None, atc: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {}
    if atc:
        c["coding"] = [{"system": ATC, "code": atc}]
    if text:
        c["text"] = text
    return c


def draft(*dosages: dict[str, Any], text: str | None = None, atc: str | None = None,
          **extra: Any) -> dict[str, Any]:
    extra.setdefault("authoredOn", ago(0, hour=0))
    c = concept(text, atc) if (text or atc) else None
    return b.order(*(dosages or (b.dosage(10, "mg", 3),)), concept=c, **extra)


def other(text: str | None = None, atc: str | None = None, id: str = "med-1",
          rtype: str = "MedicationRequest", status: str = "active") -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": rtype, "id": id, "status": status,
                         "subject": {"reference": "Patient/pat-1"},
                         "medicationCodeableConcept": concept(text, atc)}
    if rtype == "MedicationRequest":
        r["intent"] = "order"
    return r


def prn(dose: float, **extra: Any) -> dict[str, Any]:
    return b.dosage(dose, "mg", None, asNeededBoolean=True, **extra)


def per(amount: float, value: float, unit: str) -> dict[str, Any]:
    return {"numerator": {"value": amount, "unit": "mg", "system": b.UCUM, "code": "mg"},
            "denominator": {"value": value, "unit": unit, "system": b.UCUM, "code": unit}}


def adult(years: float = 50) -> dict[str, Any]:
    return b.patient(born(years))


def bacl_request(dose: float, freq: int, id: str, status: str = "active",
                 start_days: float = 60, **extra: Any) -> dict[str, Any]:
    d = b.dosage(dose, "mg", freq)
    d["timing"]["repeat"]["boundsPeriod"] = {"start": ago(start_days)}
    r = {"resourceType": "MedicationRequest", "id": id, "status": status, "intent": "order",
         "subject": {"reference": "Patient/pat-1"},
         "medicationCodeableConcept": b.baclofen_concept(), "dosageInstruction": [d]}
    r.update(extra)
    return r


def dispense(id: str = "disp-1", handed_days: float = 5, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "MedicationDispense", "id": id, "status": "completed",
                         "subject": {"reference": "Patient/pat-1"},
                         "medicationCodeableConcept": b.baclofen_concept(),
                         "whenHandedOver": ago(handed_days)}
    r.update(extra)
    return r


def days_supply(days: float) -> dict[str, Any]:
    return {"value": days, "unit": "day", "system": b.UCUM, "code": "d"}


# --- scenarios ------------------------------------------------------------------------------
# (id, scenario builder, {rule: severity, or None for "must not fire"})

def _s(orders: list[dict[str, Any]], pat: dict[str, Any] | None = None,
       context: list[dict[str, Any]] | None = None) -> Callable[[], Scenario]:
    return lambda: (orders, pat or adult(), context or [])


CASES: list[tuple[str, Callable[[], Scenario], dict[str, str | None]]] = [
    # section 1: baclofen by brand, by ATC, and with the strength glued to the word
    ("oral.max-daily_brand-lioresal",
     _s([draft(b.dosage(30, "mg", 4), text="Lioresal 20 mg tablet")]),
     {"oral.max-daily": "high", "oral.max-single": "moderate"}),
    ("oral.max-daily_brand-ozobax-strength-without-space",
     _s([draft(b.dosage(25, "mL", 4), text="Ozobax 5mg/5ml oral solution")]),
     {"oral.max-daily": "moderate", "oral.max-single": "moderate",
      "units.liquid-volume": None}),
    ("oral.max-daily_word-with-glued-strength",
     _s([draft(b.dosage(3, "tablet", 4), text="Baclofen10mg tab")]),
     {"oral.max-daily": "high", "oral.max-single": "moderate"}),
    ("oral.max-daily_atc-coded-only",
     _s([draft(b.dosage(30, "mg", 4), atc="M03BX01")]),
     {"oral.max-daily": "high"}),
    ("intrathecal.bolus_brand-gablofen-decides-the-route",
     _s([draft(b.dosage(150, "ug", None, timing={"repeat": {"count": 1}}),
               text="Gablofen 500 mcg/mL")]),
     {"intrathecal.bolus": "high", "oral.max-daily": None, "units.oral-microgram": None}),
    # section 8: interacting medicines by brand, by ATC group, by full ATC code
    ("interaction.opioid_brand-percocet",
     _s([draft()], context=[other("Percocet 5/325 mg tablet")]),
     {"interaction.opioid": "moderate"}),
    ("interaction.opioid_atc-group-N02A",
     _s([draft()], context=[other(atc="N02AA05")]),
     {"interaction.opioid": "moderate"}),
    ("interaction.sedative_brand-xanax",
     _s([draft()], context=[other("Xanax 0.5 mg", rtype="MedicationStatement")]),
     {"interaction.sedative": "moderate"}),
    ("interaction.sedative_full-atc-gabapentin",
     _s([draft()], context=[other(atc="N03AX12")]),
     {"interaction.sedative": "moderate"}),
    ("interaction.levodopa_combination-brand-sinemet",
     _s([draft()], context=[other("Sinemet 25/100")]),
     {"interaction.levodopa": "moderate"}),
    ("interaction.antihypertensive_brand-norvasc",
     _s([draft()], context=[other("Norvasc 5 mg")]),
     {"interaction.antihypertensive": "low"}),
    ("interaction.antihypertensive_atc-group-C09",
     _s([draft()], context=[other(atc="C09AA03")]),
     {"interaction.antihypertensive": "low"}),
    ("interaction.antihypertensive_widened-class-furosemide",
     _s([draft()], context=[other("furosemide 40 mg tablet")]),
     {"interaction.antihypertensive": "low"}),
    ("interaction.muscle-relaxant_baclofen-atc-is-never-interacting",
     _s([draft()], context=[other(atc="M03BX01", rtype="MedicationStatement")]),
     {"interaction.muscle-relaxant": None}),
    ("interaction.muscle-relaxant_brand-zanaflex-by-atc-group",
     _s([draft()], context=[other(atc="M03BX02")]),
     {"interaction.muscle-relaxant": "moderate"}),
    ("geriatric.cns-burden_one-ingredient-in-two-orders-is-one-drug",
     _s([draft()], adult(75), [other("OxyContin 20 mg", id="m1"),
                              other("oxycodone 5 mg tablet", id="m2")]),
     {"geriatric.cns-burden": None, "interaction.opioid": "moderate"}),
    ("geriatric.cns-burden_two-ingredients-by-brand",
     _s([draft()], adult(75), [other("OxyContin 20 mg", id="m1"), other("Zoloft 50 mg", id="m2")]),
     {"geriatric.cns-burden": "moderate"}),
    # section 1: counting as-needed orders
    ("oral.max-daily_prn-weekly-cap-is-per-day",
     _s([draft(prn(20, maxDosePerPeriod=per(140, 1, "wk")))]),
     {"oral.max-daily": None, "order.prn-no-max": None}),
    ("oral.max-daily_prn-smaller-of-frequency-and-daily-cap",
     _s([draft(b.dosage(20, "mg", 6, asNeededBoolean=True,
                        maxDosePerPeriod=per(60, 1, "d")))]),
     {"oral.max-daily": None}),
    ("oral.max-daily_prn-daily-cap-above-maximum",
     _s([draft(b.dosage(20, "mg", 6, asNeededBoolean=True,
                        maxDosePerPeriod=per(100, 1, "d")))]),
     {"oral.max-daily": "moderate"}),
    # section 2: the history fails closed
    ("oral.titration-unknown_dispense-without-dosage",
     _s([draft(b.dosage(20, "mg", 3))],
        context=[dispense(daysSupply=days_supply(30))]),
     {"oral.titration-unknown": "low", "oral.start-dose": None}),
    ("oral.titration-unknown_statement-without-dose",
     _s([draft(b.dosage(20, "mg", 3))],
        context=[{"resourceType": "MedicationStatement", "id": "st-1", "status": "active",
                  "subject": {"reference": "Patient/pat-1"},
                  "medicationCodeableConcept": b.baclofen_concept(),
                  "effectivePeriod": {"start": ago(60)}}]),
     {"oral.titration-unknown": "low", "oral.start-dose": None}),
    ("oral.titration-step_dispense-takes-its-authorising-order-dosage",
     _s([draft(b.dosage(20, "mg", 3))],
        context=[bacl_request(10, 3, "old-1", status="completed", start_days=40),
                 dispense(handed_days=2, authorizingPrescription=[
                     {"reference": "MedicationRequest/old-1"}])]),
     {"oral.titration-step": "low", "oral.titration-unknown": None,
      "oral.titration-interval": None}),
    ("oral.titration-step_dispense-quantity-x-strength-over-days-supply",
     _s([draft(b.dosage(20, "mg", 3))],
        context=[dispense(handed_days=10, daysSupply=days_supply(30),
                          quantity={"value": 90, "unit": "tablet", "system": b.UCUM,
                                    "code": "{tbl}"})]),
     {"oral.titration-step": "low", "oral.titration-unknown": None}),
    ("oral.start-dose_completed-order-without-end-is-not-current",
     _s([draft(b.dosage(10, "mg", 3))],
        context=[bacl_request(10, 3, "old-1", status="completed", start_days=200)]),
     {"oral.start-dose": "low", "oral.titration-unknown": None}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_both_front_doors(client: FlaskClient, case: Any) -> None:
    _id, build, expected = case
    orders, pat, context = build()
    assert_both(client, orders, pat, context, expected)


# --- stops (native only: no CDS hook carries a stop) -----------------------------------------

def stopped(dose: float, freq: int, start_days: float = 60) -> dict[str, Any]:
    return bacl_request(dose, freq, "stop-1", status="stopped", start_days=start_days)


STOPS: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], str | None]] = [
    ("withdrawal.abrupt_stop-with-as-needed-order-left-is-a-cut",
     [stopped(20, 3)],
     [bacl_request(10, 3, "prn-1", dosageInstruction=[prn(10, timing={"repeat": {
         "frequency": 3, "period": 1, "periodUnit": "d"}})])], "high"),
    ("withdrawal.abrupt_stop-with-stale-small-order-left-is-a-cut",
     [stopped(20, 3)], [bacl_request(5, 3, "stale-1", start_days=100)], "high"),
    ("withdrawal.abrupt_stop-with-new-small-order-in-the-call-is-a-cut",
     [stopped(10, 3), draft(b.dosage(5, "mg", 2), id="new-1")], [], "moderate"),
    ("withdrawal.abrupt_stop-with-full-order-left-is-no-cut",
     [stopped(10, 3)], [bacl_request(20, 3, "stay-1")], None),
    ("withdrawal.abrupt_stop-without-anything-left",
     [stopped(20, 3)], [], "high"),
]


@pytest.mark.parametrize("case", STOPS, ids=[c[0] for c in STOPS])
def test_stops(client: FlaskClient, case: Any) -> None:
    _id, orders, context, severity = case
    got, result = native(client, orders, adult(), context)
    stop_findings = [di for di in b.issues(result)
                     if di["identifier"][0]["value"] == "withdrawal.abrupt"
                     and di["implicated"][0]["reference"].endswith("stop-1")]
    assert (stop_findings[0]["severity"] if stop_findings else None) == severity, got


def test_stop_and_new_order_in_one_call_give_one_withdrawal_finding(
        client: FlaskClient) -> None:
    orders = [stopped(20, 3), draft(b.dosage(5, "mg", 2), id="new-1")]
    _got, result = native(client, orders, adult(), [])
    found = [di for di in b.issues(result)
             if di["identifier"][0]["value"] == "withdrawal.abrupt"]
    assert len(found) == 1 and found[0]["severity"] == "high"
    assert "from 60 mg/day to 10 mg/day" in found[0]["detail"]


def test_stop_as_cut_detail_names_before_after_and_the_as_needed_order(
        client: FlaskClient) -> None:
    orders = [stopped(20, 3)]
    context = [bacl_request(10, 3, "prn-1", dosageInstruction=[prn(10, timing={"repeat": {
        "frequency": 3, "period": 1, "periodUnit": "d"}})])]
    _got, result = native(client, orders, adult(), context)
    text = detail(result, "withdrawal.abrupt")
    assert "from 60 mg/day to 0 mg/day" in text
    assert "MedicationRequest/prn-1 (as needed: counted as zero)" in text


def test_titration_unknown_names_the_record(client: FlaskClient) -> None:
    context = [dispense(id="disp-9", daysSupply=days_supply(30))]
    _got, result = native(client, [draft(b.dosage(20, "mg", 3))], adult(), context)
    text = detail(result, "oral.titration-unknown")
    assert "a dispense (MedicationDispense/disp-9)" in text and "60 mg/day" in text
    assert b.by_rule(result, "oral.titration-unknown")["evidence"][0]["detail"][0][
        "reference"] == "MedicationDispense/disp-9"


def test_cns_burden_lists_ingredients_not_orders(client: FlaskClient) -> None:
    context = [other("OxyContin 20 mg", id="m1"), other("oxycodone 5 mg", id="m2"),
               other("Zoloft 50 mg", id="m3")]
    _got, result = native(client, [draft()], adult(75), context)
    text = detail(result, "geriatric.cns-burden")
    assert "3 CNS-active drugs" in text
    assert "oxycodone (opioids" in text and "sertraline (antidepressants" in text
