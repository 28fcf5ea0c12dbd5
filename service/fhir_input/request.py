"""A shim: the names the service imported from here, where they live now.

The request types are service/checkrequest.py, the R4B model check service/fhirmodel.py, the
native adapters (``parse_body``) and the validation service/assemble/. Kept while modules
under edit by others in this session (checker.py, engine.py, output/, facts/, web/) still
import from here; nothing new should.
"""

from __future__ import annotations

from ..assemble.native import from_bundle, from_parameters, parse_body
from ..assemble.validate import has_medication, validate_model
from ..checkrequest import CONTEXT_TYPES, MODES, CheckRequest, Item, ResourceIndex, item_for
from ..fhirmodel import model_problem

__all__ = ["CONTEXT_TYPES", "MODES", "CheckRequest", "Item", "ResourceIndex", "from_bundle",
           "from_parameters", "has_medication", "item_for", "model_problem", "parse_body",
           "validate_model"]
