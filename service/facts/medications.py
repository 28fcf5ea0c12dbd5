"""Other medicines in use, read from the context (clinical-rules section 8).

Facts only: which medicines are in use (with their ingredient names), and which of them are
baclofen and by which route.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..fhir_input.request import CheckRequest, Item
from ..fhirjson import JSON, as_dict, parse_datetime_range
from ..knowledge import Knowledge
from ..model import MedicationUse, Route
from . import products
from .drugs import medication_of, route_of

ACTIVE_REQUEST = frozenset({"active", "on-hold"})
ORDER_STATUSES = frozenset({"draft", "active", "on-hold"})
ACTIVE_STATEMENT = frozenset({"active", "intended", "on-hold"})


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
    names = products.names_of(concept, med)
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
        baclofen=products.is_baclofen(concept, med, kb),
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
