"""The adapters of the doors that read an order from FHIR_SERVER_URL: ``POST
/MedicationRequest/{id}/$check`` and a notification's re-check (service/watch/worker.py);
and a native body without its Patient, which gets the server's.

The reads are service/fhir_input/server.py; what they refuse (ReadRefused) gets its status
here, from the table (service/assemble/policy.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..checkrequest import CheckRequest
from ..fhir_input.fetch import Deadline, FhirClient
from ..fhir_input.server import ReadRefused, order_patient_id, read_order, read_patient
from ..fhirjson import JSON
from ..knowledge import Knowledge
from .core import Pieces, Source, assemble
from .policy import refuse_one
from .queries import context_queries


def from_server(client: FhirClient, order_id: str, deadline: Deadline, now: datetime,
                profile: str, kb: Knowledge, check_patient: Callable[[str], None] | None = None,
                door: str = "by-id", mode: str | None = None) -> CheckRequest:
    """The order read by id, its patient, the context searched; a draft is checked as an
    order, anything else is reviewed (unless ``mode`` says)."""
    try:
        record = read_order(client, order_id, deadline, lambda pid: context_queries(kb, pid),
                            check_patient)
    except ReadRefused as exc:
        raise _refused(exc, door) from exc
    if mode is None:
        mode = "order" if record.order.get("status") == "draft" else "review"
    return assemble(Pieces(
        door, "parameters", now, profile, orders=[Source(record.order)],
        patient=Source(record.patient), context=[Source(r) for r in record.context],
        unavailable=list(record.unavailable), mode=mode))


def with_server_patient(body: Any, client: FhirClient, deadline: Deadline) -> Any:
    """A Parameters body without a ``patient`` gets the Patient its first order's subject
    names, read from the FHIR server (interfaces.md section 2: the patient is 1..1 unless the
    service can read it). Other bodies are returned unchanged. A failed read is 502/504."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return body
    params = body.get("parameter")
    if not isinstance(params, list) or any(
        isinstance(p, dict) and p.get("name") == "patient" for p in params
    ):
        return body
    orders: list[JSON] = [p["resource"] for p in params
                          if isinstance(p, dict) and p.get("name") == "order"
                          and isinstance(p.get("resource"), dict)]
    if not orders:
        return body
    try:
        pid = order_patient_id(orders[0], client.base_url)
    except ReadRefused:
        return body  # the native adapter says what is wrong with the order
    try:
        patient = read_patient(client, pid, deadline)
    except ReadRefused as exc:
        raise _refused(exc, "parameters") from exc
    return {**body, "parameter": [*params, {"name": "patient", "resource": patient}]}


def _refused(exc: ReadRefused, door: str) -> Exception:
    return refuse_one(exc.problem, door, exc.message, exc.expression, exc.code)
