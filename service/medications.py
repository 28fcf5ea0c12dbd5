"""Moved: the medicines in use are read in service/facts/medications.py (the MedicationUse type
is in service/model.py), the ingredient matching is service/clinical/ingredients.py. This shim
stays only while tests/ (read-only until its reorganisation lands) and files being edited by
others import from here."""

from .clinical.ingredients import atc_matches, matches
from .model import MedicationUse

__all__ = ["MedicationUse", "atc_matches", "matches"]
