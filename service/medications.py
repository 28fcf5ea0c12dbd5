"""Other medicines and pregnancy, read from the context (clinical-rules sections 2 and 8).

Facts only: which medicines are in use (with their ingredient names), which of them are
baclofen and by which route, and whether pregnancy is recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .dosing import drug_names, is_baclofen, medication_of, route_of
from .facts import Route
from .fhir_input.request import CheckRequest, Item
from .fhirjson import JSON, as_dict, as_str, concept_texts, has_code, parse_datetime_range
from .knowledge import Knowledge

ACTIVE_REQUEST = frozenset({"active", "on-hold"})
ORDER_STATUSES = frozenset({"draft", "active", "on-hold"})
ACTIVE_STATEMENT = frozenset({"active", "intended", "on-hold"})
RESULT_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})


@dataclass(frozen=True)
class MedicationUse:
    ref: str
    resource_type: str
    name: str                  # as written, for details
    names: tuple[str, ...]     # lower-case texts to match ingredients in
    baclofen: bool
    route: Route
    checked: bool              # an order of this call


@dataclass(frozen=True)
class PregnancyFacts:
    ref: str
    when: datetime | None
    how: str                   # "observation" or "condition"


def medication_uses(req: CheckRequest, kb: Knowledge) -> tuple[MedicationUse, ...]:
    """Medicines in use at the check time: the orders of this call (draft, active, on-hold),
    active or on-hold MedicationRequests and active/intended MedicationStatements from the
    context whose period has not ended.

    choice: a MedicationStatement with status `intended` counts as in use, because the patient
    is about to take it.
    """
    uses: list[MedicationUse] = []
    for item in req.orders:
        if item.resource.get("status") in ORDER_STATUSES:
            uses.append(_use(item, req, kb, checked=True))
    for item in req.context:
        status = item.resource.get("status")
        if item.type == "MedicationRequest" and status in ACTIVE_REQUEST:
            if not _ended(_request_end(item.resource, req), req.check_time):
                uses.append(_use(item, req, kb, checked=False))
        elif item.type == "MedicationStatement" and status in ACTIVE_STATEMENT:
            end = as_dict(item.resource.get("effectivePeriod")).get("end")
            if not _ended(_range_end(end, req), req.check_time):
                uses.append(_use(item, req, kb, checked=False))
    return tuple(uses)


def _use(item: Item, req: CheckRequest, kb: Knowledge, checked: bool) -> MedicationUse:
    res = item.resource
    concept, med = medication_of(res, req.resolve)
    names = drug_names(concept, med)
    route: Route = "oral"
    if item.type == "MedicationRequest":
        route = route_of(res, concept, med, kb)
    else:
        route = route_of({"dosageInstruction": res.get("dosage")}, concept, med, kb)
    return MedicationUse(
        ref=item.ref,
        resource_type=item.type,
        name=names[0] if names else "an unnamed medicine",
        names=tuple(n.lower() for n in names),
        baclofen=is_baclofen(concept, med, kb),
        route=route,
        checked=checked,
    )


def _range_end(value: Any, req: CheckRequest) -> datetime | None:
    r = parse_datetime_range(value, req.check_time.tzinfo)
    if r is None:
        return None
    return r.high if r.precision != "instant" else r.low


def _request_end(res: JSON, req: CheckRequest) -> datetime | None:
    ends = []
    for dosage in res.get("dosageInstruction") or []:
        bp = as_dict(as_dict(as_dict(as_dict(dosage).get("timing")).get("repeat")).get(
            "boundsPeriod"))
        end = _range_end(bp.get("end"), req)
        if end is None:
            return None
        ends.append(end)
    return max(ends) if ends else None


def _ended(end: datetime | None, at: datetime) -> bool:
    return end is not None and end <= at


def matches(names: tuple[str, ...], ingredients: list[str], suffixes: list[str]) -> list[str]:
    """The ingredient names (or suffix words) found as whole words in ``names``."""
    found: list[str] = []
    for ingredient in ingredients:
        pattern = re.compile(rf"\b{re.escape(ingredient.lower())}\b")
        if any(pattern.search(n) for n in names):
            found.append(ingredient)
    for suffix in suffixes:
        for n in names:
            for word in re.findall(r"[a-z]+", n):
                if word.endswith(suffix) and len(word) > len(suffix) + 2 and word not in found:
                    found.append(word)
    return found


def pregnancy(req: CheckRequest, kb: Knowledge) -> PregnancyFacts | None:
    """Pregnancy recorded: an Observation (LOINC 82810-3 = SNOMED 77386006) within the
    look-back, or an active, unrefuted Condition coded 77386006 or naming pregnancy."""
    spec = kb.data["pregnancy"]
    snomed = kb.recognition["snomed_system"]
    lookback = timedelta(days=int(spec["lookback_days"]))
    words = re.compile(r"\b(" + "|".join(re.escape(w) for w in spec["words"]) + r")\b", re.I)
    for item in req.context:
        res = item.resource
        if item.type == "Observation":
            if res.get("status") not in RESULT_STATUSES:
                continue
            if not has_code(res.get("code"), "http://loinc.org", spec["observation_loinc"]):
                continue
            if not has_code(res.get("valueCodeableConcept"), snomed, spec["pregnant_snomed"]):
                continue
            when = _range_end(res.get("effectiveDateTime") or res.get("issued"), req)
            if when is not None and req.check_time - lookback <= when:
                return PregnancyFacts(item.ref, when, "observation")
        elif item.type == "Condition" and condition_counts(res):
            code = res.get("code")
            if has_code(code, snomed, spec["pregnant_snomed"]) or any(
                words.search(t) for t in concept_texts(code)
            ):
                when = _range_end(res.get("onsetDateTime") or res.get("recordedDate"), req)
                return PregnancyFacts(item.ref, when, "condition")
    return None


def condition_counts(res: JSON) -> bool:
    """Active, recurrence or relapse (or no clinical status), and not refuted or
    entered-in-error (clinical-rules section 2)."""
    clinical = [as_str(c.get("code")) for c in as_dict(res.get("clinicalStatus")).get(
        "coding") or [] if isinstance(c, dict)]
    if clinical and not set(clinical) & {"active", "recurrence", "relapse"}:
        return False
    verification = [as_str(c.get("code")) for c in as_dict(res.get("verificationStatus")).get(
        "coding") or [] if isinstance(c, dict)]
    return not set(verification) & {"refuted", "entered-in-error"}
