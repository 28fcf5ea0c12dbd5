"""The one request assembler: every front door's pieces -> one CheckRequest.

- ``core.py``: ``assemble(Pieces)``, normalising, validating and checking once for all doors;
- ``policy.py``: the status table (which problem is 400, 412, 422 or 502 at which door) and
  how each body shape is read;
- ``validate.py``: the tolerant validation of the orders and the Patient, the context checks;
- ``native.py``: the native door's adapters (a Parameters or a Bundle body; an NDJSON line);
- ``byid.py``: the adapters of the doors that read the order from FHIR_SERVER_URL (by id, a
  notification's re-check) and of a native body that gets the server's Patient.

The CheckRequest itself is service/checkrequest.py (plain data, low in the layers). The other
adapters sit beside their doors: service/cds/request.py ``from_hook`` (order-select,
order-sign, medication-prescribe), service/cds/review.py ``from_patient_view``,
service/batch.py ``from_line``, service/watch/worker.py ``from_notification``,
service/population/check.py ``from_export`` (a patient of a Bulk Data export).
"""

from ..checkrequest import CONTEXT_TYPES, CheckRequest, Item, ResourceIndex, item_for
from .core import Pieces, Source, assemble

__all__ = ["CONTEXT_TYPES", "CheckRequest", "Item", "Pieces", "ResourceIndex", "Source",
           "assemble", "item_for"]
