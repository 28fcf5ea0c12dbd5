"""Findings -> CDS Hooks 2.0 cards (interfaces.md section 4). The one card renderer.

One card per high or moderate finding; for every order with low findings exactly one ``info``
card gathering them. Each card carries its DetectedIssue(s) under the extension key
``baclofen-check.detectedIssue``; critical and warning cards carry the override reasons; a
finding with a safe correction gets an ``update`` suggestion carrying the whole corrected draft
MedicationRequest.

The Epic style (``style="epic"``, per JWT issuer or CDS_CLIENT_STYLE) follows what Epic applies:
each suggestion carries one action, ``create`` or ``delete`` only (the correction is a
suggestion that creates the corrected MedicationRequest and a second one that deletes the
draft), ``selectionBehavior: any``, and ``source.topic.code`` in letters and digits only with
the rule id in ``display`` (the DetectedIssue keeps the rule id as it is).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from ..checkrequest import CheckRequest
from ..engine import CheckOutcome
from ..fhirjson import JSON, as_dict, copy_json, dicts
from ..findings import Correction, Finding
from ..knowledge import Knowledge
from ..model import DoseLine, OrderFacts
from ..wording import fmt, mg, mg_day, micrograms
from .fhir import RULE_SYSTEM, detected_issue

SOURCE_LABEL = "baclofen-check"
EXTENSION_KEY = "baclofen-check.detectedIssue"
GATHERED_CODE = "low-findings"
NOT_CHECKED_CODE = "not-checked"
INDICATOR = {"high": "critical", "moderate": "warning", "low": "info"}
OVERRIDE_SYSTEM = "urn:baclofen-check:override-reason"
OVERRIDE_REASONS = (
    ("patient-tolerating", "Patient already tolerating this dose"),
    ("specialist-directed", "Dose directed by a specialist"),
    ("renal-reviewed", "Kidney function reviewed; dose appropriate"),
    ("will-monitor", "Will monitor closely"),
    ("inaccurate", "Warning is inaccurate for this patient"),
    ("other", "Other reason"),
)
UCUM = "http://unitsofmeasure.org"
SUMMARY_MAX = 139
STANDARD, EPIC = "standard", "epic"
STYLES = (STANDARD, EPIC)
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def topic(code: str, display: str, style: str = STANDARD) -> JSON:
    """``source.topic``: the rule id as code (Epic: letters and digits only, the rule id in
    ``display``)."""
    if style == EPIC:
        return {"system": RULE_SYSTEM, "code": _NOT_ALNUM.sub("", code), "display": code}
    return {"system": RULE_SYSTEM, "code": code, "display": display}


@dataclass
class CardRecord:
    """One card as the findings made it: its uuid, the findings it carries (each with the
    DetectedIssue in its extension), and the card itself. The audit trail and the review read
    this, never the card's JSON."""

    card_uuid: str
    findings: list[tuple[Finding, JSON]] = field(default_factory=list)
    card: JSON = field(default_factory=dict)

    @property
    def alert(self) -> bool:
        """A critical or warning card (a high or moderate finding)."""
        return any(f.severity != "low" for f, _di in self.findings)


@dataclass
class Rendered:
    cards: list[JSON]
    records: list[CardRecord]


def override_reasons() -> list[JSON]:
    return [{"system": OVERRIDE_SYSTEM, "code": c, "display": d} for c, d in OVERRIDE_REASONS]


def short(text: str, limit: int = SUMMARY_MAX) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip(" ,;:") + "\u2026"


# --- the arithmetic, for the Markdown detail ------------------------------------------------

_MICRO = re.compile(r"(?<![A-Za-z])(ug|mcg|\u00b5g|\u03bcg)(?![A-Za-z])")


def _people(written: str) -> str:
    """A dose as written, with micrograms spelled out (clinical-rules section 10)."""
    return _MICRO.sub("micrograms", written)


def _line_arithmetic(line: DoseLine, ug: bool) -> str | None:
    def amount(v: Fraction) -> str:
        return micrograms(v * 1000) if ug else mg(v)

    if line.rate_mg_day is not None:
        per = micrograms(line.rate_mg_day * 1000) + "/day" if ug else mg_day(line.rate_mg_day)
        return f"{_people(line.written)} continuous = {per}"
    if line.dose_mg is None:
        return None
    written = f"{_people(line.written)} = {amount(line.dose_mg)}" if line.written_unit in {
        "count", "mL", "g", "ug"} and not ug else amount(line.dose_mg)
    if line.single:
        return f"{written} once"
    daily = line.daily_mg
    if line.per_day is not None and daily is not None:
        prn = " (as needed, worst case)" if line.prn else ""
        total = micrograms(daily * 1000) + "/day" if ug else mg_day(daily)
        text = f"{written} \u00d7 {fmt(line.per_day)} a day = {total}{prn}"
        if line.prn and line.prn_max_mg_day is not None and daily == line.prn_max_mg_day:
            text = f"{written} as needed, at most {total} (maximum per period){prn}"
        return text
    if line.prn and line.prn_max_mg_day is not None:
        return f"{written} as needed, at most {mg_day(line.prn_max_mg_day)}"
    return None


def arithmetic(order: OrderFacts | None) -> list[str]:
    if order is None:
        return []
    ug = order.route == "intrathecal"
    out: list[str] = []
    for n, step in enumerate(order.steps):
        prefix = f"Step {n + 1}: " if order.is_plan else ""
        parts = [p for p in (_line_arithmetic(ln, ug) for ln in step.lines) if p]
        if not parts:
            continue
        text = prefix + "; ".join(parts)
        if len(step.lines) > 1 and step.daily_mg is not None:
            total = micrograms(step.daily_mg * 1000) + "/day" if ug else mg_day(step.daily_mg)
            text += f"; together {total}"
        out.append(text)
    return out


# --- the corrected order --------------------------------------------------------------------

def _number(value: Fraction) -> int | float:
    return int(value) if value.denominator == 1 else float(value)


_TIMING_FIELDS = ("frequency", "frequencyMax", "period", "periodMax", "periodUnit", "when",
                  "timeOfDay", "count", "countMax", "offset")


def corrected_order(order: JSON, correction: Correction, facts: OrderFacts | None) -> JSON:
    """The whole draft MedicationRequest with its dose replaced by the correction: one dosage
    line, the dose per administration (mg; micrograms for intrathecal corrections) and the
    administrations per day; everything else kept."""
    new = copy_json(order)
    dosages = dicts(new.get("dosageInstruction"))
    base: JSON = copy_json(dosages[0]) if dosages else {}
    for key in ("sequence", "text", "doseAndRate", "patientInstruction",
                "maxDosePerAdministration"):
        base.pop(key, None)
    # Epic's dose extensions would otherwise still give the old dose beside the new one
    kept = [e for e in dicts(base.get("extension"))
            if not str(e.get("url", "")).startswith("https://open.epic.com/fhir/extensions/")]
    if kept:
        base["extension"] = kept
    else:
        base.pop("extension", None)
    unit = "ug" if correction.unit == "ug" else "mg"
    dose = correction.dose_mg
    base["text"] = correction.label
    base["doseAndRate"] = [{"doseQuantity": {
        "value": _number(dose), "unit": unit, "system": UCUM, "code": unit}}]
    lines = facts.lines if facts else ()
    # One line whose schedule already matches keeps its timing (a bolus given once stays once).
    keep_timing = len(dosages) == 1 and len(lines) == 1 and (
        lines[0].per_day == correction.per_day
        or (lines[0].single and correction.per_day == 1))
    if not keep_timing:
        timing = as_dict(base.get("timing"))
        repeat = {k: v for k, v in as_dict(timing.get("repeat")).items()
                  if k not in _TIMING_FIELDS}
        per_day = correction.per_day
        repeat.update(frequency=per_day.numerator, period=per_day.denominator, periodUnit="d")
        base["timing"] = {"repeat": repeat}
    if base.get("asNeededBoolean") or "asNeededCodeableConcept" in base:
        daily = dose * correction.per_day
        base["maxDosePerPeriod"] = {
            "numerator": {"value": _number(daily), "unit": unit, "system": UCUM, "code": unit},
            "denominator": {"value": 1, "unit": "d", "system": UCUM, "code": "d"},
        }
    else:
        base.pop("maxDosePerPeriod", None)
    new["dosageInstruction"] = [base]
    return new


# --- cards ----------------------------------------------------------------------------------

_MARKDOWN = re.compile(r"([\\`*_\[\]<>&|#])")


def md(text: str) -> str:
    """Text for the Markdown detail: parts of it come from the order as written, so Markdown and
    HTML characters are escaped (a client renders them as written, never as markup)."""
    return _MARKDOWN.sub(r"\\\1", text)


def _detail(findings: list[Finding], facts: OrderFacts | None, kb: Knowledge) -> str:
    parts: list[str] = []
    for f in findings:
        title = kb.rule(f.rule_id).title
        parts.append(f"**{md(title)}** ({f.severity})\n\n{md(f.detail)}")
        if f.correction:
            parts.append(f"Suggested: {md(f.correction.label)}.")
    sums = arithmetic(facts)
    if sums:
        parts.append("Dose as ordered:\n\n" + "\n".join(f"- {md(s)}" for s in sums))
    sources = dict.fromkeys(kb.rule(f.rule_id).source_url for f in findings)
    parts.append("Source: " + ", ".join(f"<{u}>" for u in sources))
    return "\n\n".join(parts)


def render_cards(
    req: CheckRequest,
    outcome: CheckOutcome,
    kb: Knowledge,
    status: str = "final",
    new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
    style: str = STANDARD,
) -> Rendered:
    patient_ref = req.patient.ref if req.patient else "Patient/unknown"
    orders_json = {it.ref: it.resource for it in req.orders}
    facts = {o.ref: o for o in outcome.orders}
    cards: list[JSON] = []
    records: list[CardRecord] = []

    def issue(f: Finding) -> JSON:
        return detected_issue(f, kb, patient_ref, req.check_time, status)

    # a review (patient-view) corrects an active order, not a draft
    which = "order" if req.mode == "review" else "draft order"

    def suggestions_for(f: Finding) -> list[JSON]:
        order = orders_json.get(f.order_ref)
        if f.correction is None or order is None:
            return []
        corrected = corrected_order(order, f.correction, facts.get(f.order_ref))
        if style == EPIC:
            return epic_suggestions(order, corrected, f.correction.label, new_uuid, which)
        return [{
            "label": short(f"Change to {f.correction.label}"),
            "uuid": new_uuid(),
            "isRecommended": True,
            "actions": [{
                "type": "update",
                "description": short(f"Replace the {which}'s dose with "
                                     f"{f.correction.label}", 500),
                "resource": corrected,
            }],
        }]

    behaviour = "any" if style == EPIC else "at-most-one"

    ranked = sorted(outcome.findings, key=lambda f: -f.rank)
    for f in ranked:
        if f.severity == "low":
            continue
        spec = kb.rule(f.rule_id)
        di = issue(f)
        card_uuid = new_uuid()
        card: JSON = {
            "uuid": card_uuid,
            "summary": short(f.summary),
            "indicator": INDICATOR[f.severity],
            "detail": _detail([f], facts.get(f.order_ref), kb),
            "source": {
                "label": SOURCE_LABEL,
                "url": spec.source_url,
                "topic": topic(f.rule_id, spec.title, style),
            },
            "overrideReasons": override_reasons(),
        }
        suggestions = suggestions_for(f)
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = behaviour
        card["extension"] = {EXTENSION_KEY: di}
        cards.append(card)
        records.append(CardRecord(card_uuid, [(f, di)], card))

    low_by_order: dict[str, list[Finding]] = {}
    for f in outcome.findings:
        if f.severity == "low":
            low_by_order.setdefault(f.order_ref, []).append(f)
    for order_ref, lows in low_by_order.items():
        issues = [issue(f) for f in lows]
        card_uuid = new_uuid()
        if len(lows) == 1:
            summary = lows[0].summary
        else:
            summary = f"{len(lows)} notes on this baclofen order: " + "; ".join(
                f.summary for f in lows)
        gathered: JSON = {
            "uuid": card_uuid,
            "summary": short(summary),
            "indicator": "info",
            "detail": _detail(lows, facts.get(order_ref), kb),
            "source": {
                "label": SOURCE_LABEL,
                "url": kb.rule(lows[0].rule_id).source_url,
                "topic": topic(GATHERED_CODE, "Lower-priority notes", style),
            },
        }
        # A low finding with a safe correction (e.g. an intrathecal dose re-expressed in
        # micrograms) offers it here too.
        suggestions = [s for f in lows for s in suggestions_for(f)]
        if suggestions:
            gathered["suggestions"] = suggestions
            gathered["selectionBehavior"] = behaviour
        gathered["extension"] = {EXTENSION_KEY: issues}
        cards.append(gathered)
        records.append(CardRecord(card_uuid, list(zip(lows, issues, strict=True)), gathered))

    # choice: an order the checker could not check at all (a note of the engine, such as an
    # intrathecal order before those checks exist) is said on an info card, so that silence
    # never reads as "checked, nothing found".
    not_checked = [p for p in outcome.notes if p.severity == "warning" and p.code ==
                   "not-supported"]
    if not_checked:
        cards.append({
            "uuid": new_uuid(),
            "summary": short("Not checked: " + not_checked[0].message),
            "indicator": "info",
            "detail": "\n\n".join(md(p.message) for p in not_checked),
            "source": {"label": SOURCE_LABEL,
                       "topic": topic(NOT_CHECKED_CODE, "Not checked", style)},
        })
    return Rendered(cards, records)


def epic_suggestions(order: JSON, corrected: JSON, label: str,
                     new_uuid: Callable[[], str], which: str = "draft order") -> list[JSON]:
    """Epic applies only create and delete for a MedicationRequest: one suggestion creates the
    corrected order (without the draft's id: it is a new order), a second deletes the draft."""
    created = {k: v for k, v in corrected.items() if k != "id"}
    out: list[JSON] = [{
        "label": short(f"Order {label} instead"),
        "uuid": new_uuid(),
        "isRecommended": True,
        "actions": [{"type": "create",
                     "description": short(f"Create the corrected order: {label}", 500),
                     "resource": created}],
    }]
    oid = order.get("id")
    if isinstance(oid, str) and oid:
        out.append({
            "label": short(f"Remove the {which} as written"),
            "uuid": new_uuid(),
            "isRecommended": True,
            "actions": [{"type": "delete",
                         "description": f"Remove the {which} whose dose is replaced by "
                                        "the corrected order",
                         "resourceId": f"MedicationRequest/{oid}"}],
        })
    return out


__all__ = ["render_cards", "corrected_order", "override_reasons", "Rendered", "CardRecord",
           "EXTENSION_KEY", "SOURCE_LABEL", "short", "topic", "STYLES", "EPIC", "STANDARD"]
