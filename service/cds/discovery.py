"""The four CDS services and their prefetch templates (interfaces.md section 4).

Every input the rules read has its own prefetch key, so that a client's page size on one search
cannot cut off what another rule needs. Result searches are sorted newest first with a generous
page size; when the service fetches a key itself it follows every ``next`` link, so the page
size there only sets the size of each page. The codes come from the knowledge file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..knowledge import Knowledge, KnowledgeError

PATIENT = "{{context.patientId}}"

# choice: 100 results per page, newest first. The renal value needs the candidates within
# 7 days of the newest one and the weight/height the newest usable result within a year: the
# newest 100 results of one kind cover that for any realistic record.
RESULTS_PAGE = 100
# choice: every MedicationRequest status is listed explicitly, because some servers answer
# only active orders when no status is given (clinical-rules section 2 reads them all).
MEDICATION_REQUEST_STATUSES = (
    "active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft",
    "unknown",
)


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


def _codes(system: str, codes: Any) -> str:
    if not isinstance(codes, list | tuple) or not codes:
        raise KnowledgeError("a prefetch code list in the knowledge file is empty")
    return ",".join(f"{system}|{c}" for c in codes)


def _section(kb: Knowledge) -> Mapping[str, Any]:
    section = kb.data.get("patient_context")
    if not isinstance(section, Mapping):
        raise KnowledgeError("the knowledge file has no patient_context section")
    return section


def prefetch_templates(kb: Knowledge) -> dict[str, str]:
    """Key -> FHIR query (relative to fhirServer), one key per kind of input the rules read."""
    pc = _section(kb)
    loinc = str(pc.get("loinc_system", "http://loinc.org"))
    renal = pc["renal"]
    snomed = "http://snomed.info/sct"

    def results(codes: Any) -> str:
        return (f"Observation?patient={PATIENT}&code={_codes(loinc, codes)}"
                f"&_sort=-date&_count={RESULTS_PAGE}")

    statuses = ",".join(MEDICATION_REQUEST_STATUSES)
    return {
        "patient": f"Patient/{PATIENT}",
        "egfr": results(renal["egfr_loinc"]),
        "creatinineClearance": results(renal["crcl_loinc"]),
        "creatinine": results(renal["creatinine_loinc"]),
        "weight": results(pc["weight"]["loinc"]),
        "height": results(pc["height"]["loinc"]),
        "pregnancy": results(pc["pregnancy"]["observation_loinc"]),
        "conditions": f"Condition?patient={PATIENT}&_count={RESULTS_PAGE}",
        # Dialysis is recognised by code or by text (clinical-rules section 2), so the newest
        # procedures of any code are read, plus the coded dialysis procedures on their own.
        "dialysis": (f"Procedure?patient={PATIENT}"
                     f"&code={_codes(snomed, pc['dialysis']['procedure_snomed'])}"
                     f"&_sort=-date&_count={RESULTS_PAGE}"),
        "procedures": f"Procedure?patient={PATIENT}&_sort=-date&_count={RESULTS_PAGE}",
        "medicationRequests": (f"MedicationRequest?patient={PATIENT}&status={statuses}"
                               f"&_include=MedicationRequest:medication&_count={RESULTS_PAGE}"),
        "medicationStatements": (f"MedicationStatement?patient={PATIENT}"
                                 f"&_include=MedicationStatement:medication"
                                 f"&_count={RESULTS_PAGE}"),
        "medicationDispenses": (f"MedicationDispense?patient={PATIENT}"
                                f"&_include=MedicationDispense:medication"
                                f"&_count={RESULTS_PAGE}"),
    }


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
