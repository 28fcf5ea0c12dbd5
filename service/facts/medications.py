"""Other medicines in use, read from the context (clinical-rules section 8).

Facts only: which medicines are in use (with their ingredient names), and which of them are
baclofen and by which route.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo

from ..fhirjson import JSON, as_dict
from ..knowledge import Knowledge
from ..model import MedicationUse, Route
from . import products
from .drugs import Drug, Identified, route_of
from .source import SourceItem
from .timing import bounds_end

ACTIVE_REQUEST = frozenset({"active", "on-hold"})
ORDER_STATUSES = frozenset({"draft", "active", "on-hold"})
ACTIVE_STATEMENT = frozenset({"active", "intended", "on-hold"})


def medication_uses(orders: Sequence[SourceItem], context: Sequence[SourceItem],
                    check_time: datetime, identified: Identified, kb: Knowledge
                    ) -> tuple[MedicationUse, ...]:
    """Medicines in use at the check time: the orders of this call (draft, active, on-hold),
    active or on-hold MedicationRequests and active/intended MedicationStatements from the
    context whose period has not ended.

    choice: a MedicationStatement with status `intended` counts as in use, because the patient
    is about to take it.
    """
    tz = check_time.tzinfo
    uses: list[MedicationUse] = []
    for item in orders:
        if item.resource.get("status") in ORDER_STATUSES:
            uses.append(_use(item, identified(item.resource), kb, checked=True))
    for item in context:
        status = item.resource.get("status")
        if item.type == "MedicationRequest" and status in ACTIVE_REQUEST:
            if not _ended(_request_end(item.resource, tz), check_time):
                uses.append(_use(item, identified(item.resource), kb, checked=False))
        elif item.type == "MedicationStatement" and status in ACTIVE_STATEMENT:
            end = as_dict(item.resource.get("effectivePeriod")).get("end")
            if not _ended(bounds_end(end, tz), check_time):
                uses.append(_use(item, identified(item.resource), kb, checked=False))
    return tuple(uses)


def _use(item: SourceItem, drug: Drug, kb: Knowledge, checked: bool) -> MedicationUse:
    res = item.resource
    concept, med = drug.concept, drug.med
    names = list(drug.names)
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
        route = route_of(res, concept, med, kb, names)
    else:
        route = route_of({"dosageInstruction": res.get("dosage")}, concept, med, kb, names)
    return MedicationUse(
        ref=item.ref,
        resource_type=item.type,
        name=names[0] if names else (f"ATC {atc[0]}" if atc else "an unnamed medicine"),
        names=tuple(dict.fromkeys(n.lower() for n in names + extra)),
        baclofen=drug.baclofen,
        route=route,
        checked=checked,
        atc=tuple(atc),
        brands=tuple(f"{b} ({', '.join(i)})" for b, i in brands.items()),
    )


def _request_end(res: JSON, tz: tzinfo | None) -> datetime | None:
    ends = []
    for dosage in res.get("dosageInstruction") or []:
        bp = as_dict(as_dict(as_dict(as_dict(dosage).get("timing")).get("repeat")).get(
            "boundsPeriod"))
        end = bounds_end(bp.get("end"), tz)
        if end is None:
            return None
        ends.append(end)
    return max(ends) if ends else None


def _ended(end: datetime | None, at: datetime) -> bool:
    return end is not None and end <= at
