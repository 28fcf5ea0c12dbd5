"""The facts stage: FHIR JSON of one call in, the typed facts of service/model.py out, each
medicine identified and each resource read once per call (``build_facts``, facts/build.py).

Modules: build.py (the stage), drugs.py and products.py (which medicine, route, strength),
orders.py and timing.py (a dosage read), history.py (baclofen regimens), medications.py
(medicines in use).

The re-export below stays only while files being edited by others still import the fact types
from here; new code imports them from service.model.
"""

from ..model import (
    BAND_ORDER,
    EGFR_SOURCES,
    AgeFacts,
    ConditionEvidence,
    DoseLine,
    MedicationHistory,
    MedicationUse,
    OrderFacts,
    PatientFacts,
    Regimen,
    RegimenSource,
    RenalBand,
    RenalCandidate,
    RenalFacts,
    RenalSource,
    Route,
    Step,
    TherapyTime,
    UnitKind,
)

__all__ = ["BAND_ORDER", "EGFR_SOURCES", "AgeFacts", "ConditionEvidence", "DoseLine",
           "MedicationHistory", "MedicationUse", "OrderFacts", "PatientFacts", "Regimen",
           "RegimenSource", "RenalBand", "RenalCandidate", "RenalFacts", "RenalSource", "Route",
           "Step", "TherapyTime", "UnitKind"]
