"""``baclofen-patient-view``: at chart open, the patient's active baclofen orders are reviewed
against the current record (the review mode of the native path, the same prefetch keys).

Only high and moderate findings become cards, and a card this service already returned for the
same finding of the same patient within CDS_REPEAT_AFTER_H hours is not returned again (the
store knows what it returned). A finding's id hashes the rule, the order, its dose and the
knowledge version, so a changed dose or new knowledge is a new finding and is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime

from ..assemble import CheckRequest, ResourceIndex
from ..facts.drugs import names_baclofen
from ..fhirjson import JSON, as_dict, as_str
from ..fhirref import parse_reference
from ..knowledge import Knowledge
from ..output.cards import CardRecord, Rendered
from .request import HookCall, KeyData, from_hook

REVIEW_KEY = "medicationRequests"


def _for_patient(resource: JSON, patient_id: str) -> bool:
    ref = as_str(as_dict(resource.get("subject")).get("reference"))
    if ref is None:
        return True
    target = parse_reference(ref)
    return target is not None and target.type == "Patient" and target.id == patient_id


def review_orders(data: Mapping[str, KeyData], patient_id: str, kb: Knowledge) -> list[JSON]:
    """The patient's active baclofen MedicationRequests in the record (as the native path's
    review of a Bundle without drafts picks them)."""
    index = ResourceIndex()
    for kd in data.values():
        for res in kd.resources:
            index.add(res)
    orders: list[JSON] = []
    seen: set[str] = set()
    for res in data.get(REVIEW_KEY, KeyData([])).resources:
        if res.get("resourceType") != "MedicationRequest" or res.get("status") != "active":
            continue
        # the same order in two pages of a search counts once (an order without id is its own)
        key = f"MedicationRequest/{res['id']}" if as_str(res.get("id")) else str(id(res))
        if key in seen or not _for_patient(res, patient_id):
            continue
        if names_baclofen(res, index.resolve, kb):
            seen.add(key)
            orders.append(res)
    return orders


def from_patient_view(call: HookCall, data: Mapping[str, KeyData], now: datetime,
                      profile: str, kb: Knowledge) -> CheckRequest:
    """The patient-view adapter: the orders are the record's active baclofen orders, the
    rest as for every hook; review mode. An order of the record whose status, patient,
    medicine or route cannot be read is left out (logged by id) instead of refusing the chart
    open: it is the record's content, not the caller's request (service/assemble/policy.py)."""
    return from_hook(call, data, now, profile, review_orders(data, call.patient_id, kb),
                     "review")


def finding_ids(record: CardRecord) -> list[str]:
    """The ids of the findings a card carries (from the findings, not the card's JSON)."""
    return [f.id for f, _di in record.findings]


def alerts_not_repeated(rendered: Rendered,
                        returned: Callable[[Collection[str]], Collection[str]]) -> Rendered:
    """Only the critical and warning cards, less those whose findings were all returned
    recently (``returned`` gives which of the finding ids were)."""
    alerts = [r for r in rendered.records if r.alert]
    ids = {fid for r in alerts for fid in finding_ids(r)}
    shown = set(returned(ids)) if ids else set()
    kept = [r for r in alerts if not (finding_ids(r) and set(finding_ids(r)) <= shown)]
    return Rendered([r.card for r in kept], kept)
