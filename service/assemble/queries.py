"""The reads of a patient's record that the rules need, one query per kind of input: the
CDS Hooks prefetch templates (service/cds/discovery.py lists them) and the by-id door's reads
of FHIR_SERVER_URL (service/assemble/byid.py), the same queries for both.

Every input the rules read has its own key, so that a client's page size on one search
cannot cut off what another rule needs. Result searches are sorted newest first with a
generous page size; the codes come from the knowledge file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..knowledge import Knowledge, KnowledgeError

PATIENT_KEY = "patient"
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


def context_queries(kb: Knowledge, patient_id: str) -> dict[str, str]:
    """The context reads for one patient: the prefetch queries, minus the patient."""
    pid = quote(patient_id, safe="")
    return {key: query.replace(PATIENT, pid) for key, query in prefetch_templates(kb).items()
            if key != PATIENT_KEY}
