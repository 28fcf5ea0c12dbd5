"""Other medicines in use, read from the context (clinical-rules section 8).

Facts only: which medicines are in use (with their ingredient names), and which of them are
baclofen and by which route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from . import products
from .dosing import drug_names, is_baclofen, medication_of, route_of
from .facts import Route
from .fhir_input.request import CheckRequest, Item
from .fhirjson import JSON, as_dict, parse_datetime_range
from .knowledge import Knowledge

ACTIVE_REQUEST = frozenset({"active", "on-hold"})
ORDER_STATUSES = frozenset({"draft", "active", "on-hold"})
ACTIVE_STATEMENT = frozenset({"active", "intended", "on-hold"})


@dataclass(frozen=True)
class MedicationUse:
    ref: str
    resource_type: str
    name: str                  # as written, for details
    names: tuple[str, ...]     # lower-case texts to match ingredients in (brands read as
                               # their ingredients, full ATC codes as their ingredient)
    baclofen: bool
    route: Route
    checked: bool              # an order of this call
    atc: tuple[str, ...] = ()  # WHO ATC codes of the medicine and its ingredients
    brands: tuple[str, ...] = ()   # "Percocet (oxycodone, acetaminophen)", for details


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
    atc = products.atc_codes(products.concepts_of(concept, med), kb)
    by_brand = products.brand_ingredients(names, kb)
    # clinical-rules section 8: a brand is read as its ingredients, a full ATC code as its
    # ingredient; the extra names are matched like written ones
    extra = [i for _, i in by_brand] + products.atc_ingredient_names(atc, kb)
    brands: dict[str, list[str]] = {}
    for brand, ingredient in by_brand:
        brands.setdefault(brand, []).append(ingredient)
    route: Route = "oral"
    if item.type == "MedicationRequest":
        route = route_of(res, concept, med, kb)
    else:
        route = route_of({"dosageInstruction": res.get("dosage")}, concept, med, kb)
    return MedicationUse(
        ref=item.ref,
        resource_type=item.type,
        name=names[0] if names else (f"ATC {atc[0]}" if atc else "an unnamed medicine"),
        names=tuple(dict.fromkeys(n.lower() for n in names + extra)),
        baclofen=is_baclofen(concept, med, kb),
        route=route,
        checked=checked,
        atc=tuple(atc),
        brands=tuple(f"{b} ({', '.join(i)})" for b, i in brands.items()),
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


@lru_cache(maxsize=4096)
def _whole_word(word: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(word)}\b")


_LETTERS = re.compile(r"[a-z]+")


@lru_cache(maxsize=256)
def _any_of(ingredients: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern that finds a name containing any of ``ingredients`` as a whole word: it
    rules out, in one search, a medicine that matches none of a class (the usual case)."""
    return re.compile(r"\b(?:" + "|".join(re.escape(i.lower()) for i in ingredients) + r")\b")


def matches(names: tuple[str, ...], ingredients: list[str], suffixes: list[str]) -> list[str]:
    """The ingredient names (or suffix words) found as whole words in ``names``."""
    found: list[str] = []
    if ingredients and names:
        anything = _any_of(tuple(ingredients))
        if any(anything.search(n) for n in names):
            for ingredient in ingredients:
                low = ingredient.lower()
                # a whole-word match is also a substring: the cheap test rules out most
                if any(low in n for n in names) and any(
                        _whole_word(low).search(n) for n in names):
                    found.append(ingredient)
    if suffixes:
        words = [word for n in names for word in _LETTERS.findall(n)]
        for suffix in suffixes:
            for word in words:
                if word.endswith(suffix) and len(word) > len(suffix) + 2 and word not in found:
                    found.append(word)
    return found


def atc_matches(atc: tuple[str, ...], prefixes: list[str], kb: Knowledge) -> list[str]:
    """The ATC codes of ``atc`` in the groups ``prefixes`` (baclofen, M03BX01, never)."""
    return [code for code in atc
            if not products.is_baclofen_atc(code, kb)
            and any(code.startswith(str(p).upper()) for p in prefixes)]
