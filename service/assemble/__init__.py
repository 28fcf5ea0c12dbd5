"""The one request assembler: every front door's pieces -> one CheckRequest.

- ``request.py``: the CheckRequest, its items and the references inside it (plain data);
- ``core.py``: ``assemble(Pieces)``, normalising, validating and checking once for all doors;
- ``validate.py``: the tolerant validation of the orders and the Patient, the context checks;
- ``policy.py``: the status table (which problem is 400, 412, 422 or 502 at which door).

The adapters, one per door, sit beside their doors: service/fhir_input/request.py (native
Bundle and Parameters), service/fhir_input/server.py (by id), service/cds/request.py (the
hooks), service/cds/review.py (patient-view), service/batch.py (an NDJSON line),
service/watch/worker.py (a notification's re-check), service/population/check.py (a patient
of a Bulk Data export).
"""

from .core import Pieces, Source, assemble
from .request import CONTEXT_TYPES, CheckRequest, Item, ResourceIndex, item_for

__all__ = ["CONTEXT_TYPES", "CheckRequest", "Item", "Pieces", "ResourceIndex", "Source",
           "assemble", "item_for"]
