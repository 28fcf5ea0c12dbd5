"""An order that lives on FHIR_SERVER_URL -> CheckRequest (``POST /MedicationRequest/{id}/$check``).

``read_order`` reads (this module's part); ``from_server`` is the by-id door's adapter, which
says where the pieces are and leaves the building to service/assemble/.

The order is read first (its subject names the patient); then the patient and every kind of
context the rules read are fetched in parallel, with the same queries the CDS Hooks service
asks for as prefetch (service/cds/discovery.py), all within one deadline. A failed read of the
order or the patient fails the request (502, or 504 on the deadline) naming the call; any other
failed read is named in ``CheckRequest.unavailable`` (the ``context.unavailable`` finding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from ..assemble import CONTEXT_TYPES, CheckRequest, Pieces, Source, assemble
from ..assemble.policy import refuse_one
from ..cds.discovery import PATIENT, prefetch_templates
from ..errors import ServiceError
from ..fhirjson import JSON, as_dict, as_str
from ..fhirref import parse_reference, unversioned
from ..knowledge import Knowledge
from ..outbound.deadline import Deadline, FetchFailure
from ..outbound.pool import fetch_all
from .fetch import FhirClient

PATIENT_KEY = "patient"


def upstream_error(what: str, failure: FetchFailure, door: str = "by-id") -> ServiceError:
    """502 (504 when the deadline passed) naming the call that failed."""
    timeout = failure.reason == "timeout"
    return refuse_one("upstream-timeout" if timeout else "upstream-failed", door,
                      f"could not read {what} from the FHIR server: {failure.message}",
                      code="timeout" if timeout else "transient")


def _patient_id(order: JSON, base_url: str, door: str) -> str:
    ref = as_str(as_dict(order.get("subject")).get("reference"))
    if ref is None:
        raise refuse_one("order-names-no-patient", door,
                         "the order names no patient (MedicationRequest.subject)",
                         "MedicationRequest.subject", "required")
    if ref.startswith(base_url + "/"):
        ref = ref[len(base_url) + 1:]
    target = parse_reference(ref)
    if target is None or target.type != "Patient" or target.relative != unversioned(ref):
        raise refuse_one("order-names-no-patient", door,
                         f"the order's subject {ref!r} is not a Patient on the FHIR server",
                         "MedicationRequest.subject", "processing")
    return target.id


def context_queries(kb: Knowledge, patient_id: str) -> dict[str, str]:
    """The context reads for one patient: the CDS Hooks prefetch queries, minus the patient."""
    pid = quote(patient_id, safe="")
    return {key: query.replace(PATIENT, pid) for key, query in prefetch_templates(kb).items()
            if key != PATIENT_KEY}


@dataclass
class ServerRecord:
    """What was read for one order: the order, its patient, the context, the failed reads."""

    order: JSON
    patient: JSON
    context: list[JSON] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)


def read_order(client: FhirClient, order_id: str, deadline: Deadline, kb: Knowledge,
               check_patient: Callable[[str], None] | None = None,
               door: str = "by-id") -> ServerRecord:
    """Read one order and everything its check needs. ``check_patient`` is called with the
    order's patient id before anything else is read (it raises to refuse: an access token
    confined to another patient)."""
    try:
        order = client.read(f"MedicationRequest/{quote(order_id, safe='')}", deadline)
    except FetchFailure as failure:
        raise upstream_error(f"the order MedicationRequest/{order_id}", failure,
                             door) from failure
    if order.get("resourceType") != "MedicationRequest" or order.get("id") != order_id:
        raise refuse_one("upstream-wrong-answer", door,
                         f"the FHIR server answered a {order.get('resourceType')} for "
                         f"MedicationRequest/{order_id}", code="transient")
    pid = _patient_id(order, client.base_url, door)
    if check_patient is not None:
        check_patient(pid)

    calls: dict[str, Callable[[], Any]] = {
        PATIENT_KEY: lambda: client.read(f"Patient/{quote(pid, safe='')}", deadline)}
    for key, query in context_queries(kb, pid).items():
        calls[key] = (lambda q: lambda: client.search(q, deadline))(query)
    med_ref = as_str(as_dict(order.get("medicationReference")).get("reference"))
    if med_ref and med_ref.startswith("Medication/"):
        calls["orderMedication"] = lambda: client.read(med_ref, deadline)
    results = fetch_all(calls, deadline)

    medication = results.pop("orderMedication", None)
    if isinstance(medication, FetchFailure):  # without it the order cannot be understood
        raise upstream_error(f"the order's medication {med_ref}", medication, door)
    patient = _patient_answer(results.pop(PATIENT_KEY), pid, door)

    unavailable: list[str] = []   # policy "context-read-failed": named, never refused
    context: dict[str, JSON] = {}
    for key, value in results.items():
        if isinstance(value, FetchFailure):
            unavailable.append(key)
            continue
        for res in value if isinstance(value, list) else [value]:
            rtype, rid = res.get("resourceType"), res.get("id")
            if rtype not in CONTEXT_TYPES or (rtype, rid) == ("MedicationRequest", order_id):
                continue
            context.setdefault(f"{rtype}/{rid}" if rid else str(id(res)), res)
    if isinstance(medication, dict):
        context.setdefault(f"Medication/{medication.get('id')}", medication)
    return ServerRecord(order, patient, list(context.values()), unavailable)


def _patient_answer(answer: Any, pid: str, door: str) -> JSON:
    if isinstance(answer, FetchFailure):
        raise upstream_error(f"the patient Patient/{pid}", answer, door)
    if answer.get("resourceType") != "Patient":
        raise refuse_one("upstream-wrong-answer", door,
                         f"the FHIR server answered a {answer.get('resourceType')} for "
                         f"Patient/{pid}", code="transient")
    patient: JSON = answer
    return patient


def from_server(record: ServerRecord, now: datetime, profile: str, door: str = "by-id",
                mode: str | None = None) -> CheckRequest:
    """The by-id adapter: the order read, its patient, the context searched; a draft is
    checked as an order, anything else is reviewed."""
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
        pid = _patient_id(orders[0], client.base_url, "parameters")
    except ServiceError:
        return body  # the parser says what is wrong with the order
    try:
        answer: Any = client.read(f"Patient/{quote(pid, safe='')}", deadline)
    except FetchFailure as failure:
        answer = failure
    patient = _patient_answer(answer, pid, "parameters")
    return {**body, "parameter": [*params, {"name": "patient", "resource": patient}]}


def read_from_server(client: FhirClient, order_id: str, deadline: Deadline, now: datetime,
                     profile: str, kb: Knowledge,
                     check_patient: Callable[[str], None] | None = None) -> CheckRequest:
    """The old name: ``read_order`` then the by-id adapter ``from_server`` (a shim while
    web/fhir_api.py and watch/worker.py, edited by others in this session, still call it)."""
    return from_server(read_order(client, order_id, deadline, kb, check_patient), now, profile)
