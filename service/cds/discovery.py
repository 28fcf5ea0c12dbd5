"""The four CDS services and their prefetch templates (interfaces.md section 4).

Every input the rules read has its own prefetch key, so that a client's page size on one search
cannot cut off what another rule needs. Result searches are sorted newest first with a generous
page size; when the service fetches a key itself it follows every ``next`` link, so the page
size there only sets the size of each page. The codes come from the knowledge file. The
templates themselves are service/assemble/queries.py (the by-id door reads the same queries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..assemble.queries import (  # the queries the by-id door shares, re-exported here
    MEDICATION_REQUEST_STATUSES,
    PATIENT,
    RESULTS_PAGE,
    prefetch_templates,
)
from ..knowledge import Knowledge

__all__ = ["KEY_LABELS", "MEDICATION_REQUEST_STATUSES", "PATIENT", "RESULTS_PAGE", "SERVICES",
           "CdsService", "discovery", "prefetch_templates"]


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    orders_key: str   # where the orders are in the context: draftOrders, medications or ""

    @property
    def legacy(self) -> bool:
        return self.hook == "medication-prescribe"

    @property
    def review(self) -> bool:
        """patient-view: the record's active baclofen orders are reviewed (no orders sent)."""
        return self.hook == "patient-view"


SERVICES: dict[str, CdsService] = {s.id: s for s in (
    CdsService(
        "baclofen-order-select", "order-select", "Baclofen dose check (order select)",
        "Checks the selected baclofen orders while they are being written: dose ceilings, "
        "kidney function, age, interactions, pregnancy. Findings are preliminary.",
        "draftOrders"),
    CdsService(
        "baclofen-order-sign", "order-sign", "Baclofen dose check (order sign)",
        "Checks baclofen orders before they are signed: dose ceilings, kidney function, age, "
        "interactions, duplicates, pregnancy and order quality.",
        "draftOrders"),
    CdsService(
        "baclofen-medication-prescribe", "medication-prescribe",
        "Baclofen dose check (medication-prescribe)",
        "The same checks as baclofen-order-sign for clients of the earlier "
        "medication-prescribe hook (context.medications).",
        "medications"),
    CdsService(
        "baclofen-patient-view", "patient-view", "Baclofen order review (patient view)",
        "When the chart opens, reviews the patient's active baclofen orders against the "
        "current record (kidney function, age, interactions, pregnancy). Only high and "
        "moderate findings are shown, each at most once per patient within "
        "CDS_REPEAT_AFTER_H hours.",
        ""),
)}


# What each key is, for people (context.unavailable names it).
KEY_LABELS = {
    "patient": "the patient record",
    "egfr": "eGFR results",
    "creatinineClearance": "creatinine clearance results",
    "creatinine": "serum creatinine results",
    "weight": "body weight",
    "height": "body height",
    "pregnancy": "pregnancy status observations",
    "conditions": "conditions",
    "dialysis": "dialysis procedures",
    "procedures": "procedures",
    "medicationRequests": "medication orders",
    "medicationStatements": "medication statements",
    "medicationDispenses": "medication dispenses",
}


def discovery(kb: Knowledge) -> dict[str, Any]:
    templates = prefetch_templates(kb)
    return {"services": [
        {
            "hook": s.hook,
            "title": s.title,
            "description": s.description,
            "id": s.id,
            "prefetch": templates,
            "usageRequirements": "Prefetch every key, or give fhirServer and "
                                 "fhirAuthorization so that the service can read them.",
        }
        for s in SERVICES.values()
    ]}
