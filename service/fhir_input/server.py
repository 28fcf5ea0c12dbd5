"""An order that lives on FHIR_SERVER_URL -> CheckRequest (``POST /MedicationRequest/{id}/$check``).

``read_order`` reads (this module's part); the by-id door's adapter, service/assemble/byid.py,
says where the pieces are, builds them and answers what the reads refused (ReadRefused)
through the status table.

The order is read first (its subject names the patient); then the patient and every kind of
context the rules read are fetched in parallel, with the same queries the CDS Hooks service
asks for as prefetch (service/cds/discovery.py), all within one deadline. A failed read of the
order or the patient fails the request (502, or 504 on the deadline) naming the call; any other
failed read is named in ``CheckRequest.unavailable`` (the ``context.unavailable`` finding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ..checkrequest import CONTEXT_TYPES
from ..fhirjson import JSON, as_dict, as_str
from ..fhirref import parse_reference, unversioned
from ..outbound.deadline import Deadline, FetchFailure
from ..outbound.pool import fetch_all
from .fetch import FhirClient

PATIENT_KEY = "patient"   # the read of the order's patient among the calls


class ReadRefused(Exception):
    """What the reads found that stops the check: ``problem`` is its row in the status table
    (service/assemble/policy.py), where the door's adapter turns it into the answer."""

    def __init__(self, problem: str, message: str, expression: str | None = None,
                 code: str = "invalid") -> None:
        super().__init__(message)
        self.problem, self.message, self.expression, self.code = (problem, message, expression,
                                                                  code)


def upstream_error(what: str, failure: FetchFailure) -> ReadRefused:
    """The failed read, naming the call (502; 504 when the deadline passed)."""
    timeout = failure.reason == "timeout"
    return ReadRefused("upstream-timeout" if timeout else "upstream-failed",
                       f"could not read {what} from the FHIR server: {failure.message}",
                       code="timeout" if timeout else "transient")


def order_patient_id(order: JSON, base_url: str) -> str:
    """The id of the Patient the order's subject names on the server at ``base_url``."""
    ref = as_str(as_dict(order.get("subject")).get("reference"))
    if ref is None:
        raise ReadRefused("order-names-no-patient",
                          "the order names no patient (MedicationRequest.subject)",
                          "MedicationRequest.subject", "required")
    if ref.startswith(base_url + "/"):
        ref = ref[len(base_url) + 1:]
    target = parse_reference(ref)
    if target is None or target.type != "Patient" or target.relative != unversioned(ref):
        raise ReadRefused("order-names-no-patient",
                          f"the order's subject {ref!r} is not a Patient on the FHIR server",
                          "MedicationRequest.subject", "processing")
    return target.id


@dataclass
class ServerRecord:
    """What was read for one order: the order, its patient, the context, the failed reads."""

    order: JSON
    patient: JSON
    context: list[JSON] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)


def read_order(client: FhirClient, order_id: str, deadline: Deadline,
               queries: Callable[[str], Mapping[str, str]],
               check_patient: Callable[[str], None] | None = None) -> ServerRecord:
    """Read one order and everything its check needs (``queries``: key -> search, for the
    order's patient id); raises ReadRefused when the order, its medication or its patient
    cannot be had. ``check_patient`` is called with the order's patient id before anything
    else is read (it raises to refuse: an access token confined to another patient)."""
    try:
        order = client.read(f"MedicationRequest/{quote(order_id, safe='')}", deadline)
    except FetchFailure as failure:
        raise upstream_error(f"the order MedicationRequest/{order_id}", failure) from failure
    if order.get("resourceType") != "MedicationRequest" or order.get("id") != order_id:
        raise ReadRefused("upstream-wrong-answer",
                          f"the FHIR server answered a {order.get('resourceType')} for "
                          f"MedicationRequest/{order_id}", code="transient")
    pid = order_patient_id(order, client.base_url)
    if check_patient is not None:
        check_patient(pid)

    calls: dict[str, Callable[[], Any]] = {
        PATIENT_KEY: lambda: client.read(f"Patient/{quote(pid, safe='')}", deadline)}
    for key, query in queries(pid).items():
        calls[key] = (lambda q: lambda: client.search(q, deadline))(query)
    med_ref = as_str(as_dict(order.get("medicationReference")).get("reference"))
    if med_ref and med_ref.startswith("Medication/"):
        calls["orderMedication"] = lambda: client.read(med_ref, deadline)
    results = fetch_all(calls, deadline)

    medication = results.pop("orderMedication", None)
    if isinstance(medication, FetchFailure):  # without it the order cannot be understood
        raise upstream_error(f"the order's medication {med_ref}", medication)
    patient = _patient_answer(results.pop(PATIENT_KEY), pid)

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


def read_patient(client: FhirClient, pid: str, deadline: Deadline) -> JSON:
    try:
        answer: Any = client.read(f"Patient/{quote(pid, safe='')}", deadline)
    except FetchFailure as failure:
        answer = failure
    return _patient_answer(answer, pid)


def _patient_answer(answer: Any, pid: str) -> JSON:
    if isinstance(answer, FetchFailure):
        raise upstream_error(f"the patient Patient/{pid}", answer)
    if answer.get("resourceType") != "Patient":
        raise ReadRefused("upstream-wrong-answer",
                          f"the FHIR server answered a {answer.get('resourceType')} for "
                          f"Patient/{pid}", code="transient")
    patient: JSON = answer
    return patient
