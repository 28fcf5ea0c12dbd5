"""A CDS Hooks call -> one CheckRequest (hook set, mode "order").

``parse_call`` validates the body (400 with an OperationOutcome naming the fault);
``from_hook`` is the hooks' adapter: it says where the orders (the hook context), the Patient
and the context (the prefetched or fetched data) are, and service/assemble/ builds the same
CheckRequest as for every other door.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..assemble import CheckRequest, Pieces, Source, assemble
from ..assemble.policy import CDS_HOOKS, refuse_one
from ..errors import ServiceError
from ..fhirjson import JSON, as_dict, as_str, dicts
from ..fhirref import parse_reference
from .discovery import CdsService

ORDER_SELECT = "order-select"


@dataclass
class HookCall:
    """A validated CDS Hooks request. ``fhir_token`` is never logged or stored."""

    service: CdsService
    hook_instance: str
    patient_id: str
    context: JSON
    orders_json: list[JSON]            # the MedicationRequests to check, as sent
    other_drafts: list[JSON]           # other resources of the orders container (context)
    prefetch: dict[str, Any]
    fhir_server: str | None = None
    fhir_token: str | None = field(default=None, repr=False)
    user_id: str | None = None


def _fail(message: str, expression: str | None = None, code: str = "invalid") -> ServiceError:
    return refuse_one("body-invalid", CDS_HOOKS, message, expression, code)


def _bundle_resources(bundle: JSON, where: str) -> list[JSON]:
    entries = bundle.get("entry", [])
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise _fail(f"{where}.entry must be a list", f"{where}.entry", "structure")
    out = []
    for i, entry in enumerate(entries):
        res = as_dict(entry).get("resource")
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise _fail(f"{where}.entry[{i}] holds no resource", f"{where}.entry[{i}]",
                        "structure")
        out.append(res)
    return out


def _orders_container(service: CdsService, context: JSON) -> list[JSON]:
    key = service.orders_key
    where = f"context.{key}"
    if key not in context:
        raise _fail(f"{where} is required for the {service.hook} hook", where, "required")
    value = context[key]
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        return _bundle_resources(value, where)
    if service.legacy and isinstance(value, list):
        # medication-prescribe clients sent an array of resources (CDS Hooks 1.0).
        if not all(isinstance(r, dict) and isinstance(r.get("resourceType"), str)
                   for r in value):
            raise _fail(f"every item of {where} must be a FHIR resource", where, "structure")
        return list(value)
    if service.legacy and isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return [value]
    raise _fail(f"{where} must be a FHIR Bundle", where, "structure")


def _selected(resources: list[JSON], selections: Any) -> tuple[list[JSON], list[JSON]]:
    """order-select: only the orders named in ``selections`` are checked (and read at all)."""
    if not isinstance(selections, list) or not selections or not all(
            isinstance(s, str) and s.strip() for s in selections):
        raise _fail("context.selections must be a non-empty list of references",
                    "context.selections", "required")
    chosen: list[JSON] = []
    missing = []
    for ref in selections:
        target = parse_reference(ref)
        match = None
        if target is not None:
            for res in resources:
                if res.get("resourceType") == target.type and res.get("id") == target.id:
                    match = res
                    break
        if match is None:
            missing.append(ref)
        elif match not in chosen and match.get("resourceType") == "MedicationRequest":
            chosen.append(match)
    if missing:
        # The order to check cannot be had (CDS Hooks: 412, service/assemble/policy.py).
        raise refuse_one("selection-missing", ORDER_SELECT,
                         "context.selections names orders that are not in context.draftOrders: "
                         + ", ".join(missing[:10]), "context.selections", "not-found")
    # the orders not selected are not read at all; other resources of draftOrders (Epic sends
    # the Medications an order references as sibling entries) are context
    others = [r for r in resources if r.get("resourceType") != "MedicationRequest"]
    return chosen, others


def parse_call(body: Any, service: CdsService) -> HookCall:
    if not isinstance(body, dict):
        raise _fail("the request body must be a JSON object (a CDS Hooks request)")
    hook = body.get("hook")
    if hook != service.hook:
        raise _fail(f"service {service.id} answers the {service.hook} hook, not "
                    f"{hook if isinstance(hook, str) else '(none)'}", "hook", "invalid")
    instance = as_str(body.get("hookInstance"))
    if instance is None:
        raise _fail("hookInstance is required", "hookInstance", "required")
    context = body.get("context")
    if not isinstance(context, dict):
        raise _fail("context is required and must be an object", "context", "required")
    patient_id = as_str(context.get("patientId"))
    if patient_id is None:
        raise _fail("context.patientId is required", "context.patientId", "required")
    if "/" in patient_id:
        raise _fail("context.patientId must be a plain id", "context.patientId")
    fhir_server = body.get("fhirServer")
    if fhir_server is not None and (not isinstance(fhir_server, str) or not fhir_server.startswith(
            ("http://", "https://"))):
        raise _fail("fhirServer must be an http(s) URL", "fhirServer")
    token = None
    auth = body.get("fhirAuthorization")
    if auth is not None:
        if not isinstance(auth, dict) or as_str(auth.get("access_token")) is None:
            raise _fail("fhirAuthorization must be an object with an access_token",
                        "fhirAuthorization")
        if fhir_server is None:
            raise _fail("fhirAuthorization is given without fhirServer", "fhirAuthorization")
        token = str(auth["access_token"])
    prefetch = body.get("prefetch", {})
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, dict):
        raise _fail("prefetch must be an object", "prefetch", "structure")

    # patient-view sends no orders: the record's active orders are reviewed (cds/review.py)
    resources = _orders_container(service, context) if service.orders_key else []
    if service.hook == ORDER_SELECT:
        orders, others = _selected(resources, context.get("selections"))
    else:
        orders = [r for r in resources if r.get("resourceType") == "MedicationRequest"]
        others = [r for r in resources if r.get("resourceType") != "MedicationRequest"]
        if service.legacy and resources and not orders:
            kinds = ", ".join(sorted({str(r.get("resourceType")) for r in resources}))
            raise _fail(f"context.medications holds no MedicationRequest (found {kinds}); "
                        "send FHIR R4 MedicationRequests", "context.medications",
                        "not-supported")
    return HookCall(
        service=service,
        hook_instance=instance,
        patient_id=patient_id,
        context=context,
        orders_json=orders,
        other_drafts=others,
        prefetch=prefetch,
        fhir_server=fhir_server.rstrip("/") if isinstance(fhir_server, str) else None,
        fhir_token=token,
        user_id=as_str(context.get("userId")),
    )


def medication_reads(call: HookCall) -> dict[str, str]:
    """Medications the orders reference but the request does not hold: key -> relative URL
    (the key is the reference itself, so context.unavailable names it)."""
    held = {f"{r.get('resourceType')}/{r.get('id')}" for r in call.other_drafts}
    for value in call.prefetch.values():
        # a Medication the prefetch already holds (a search with _include) is not read again
        for entry in dicts(as_dict(value).get("entry")):
            res = as_dict(entry.get("resource"))
            if res.get("resourceType") == "Medication":
                held.add(f"Medication/{res.get('id')}")
    out: dict[str, str] = {}
    for order in call.orders_json:
        ref = as_str(as_dict(order.get("medicationReference")).get("reference"))
        if ref is None or ref.startswith("#"):
            continue
        target = parse_reference(ref)
        if target is None or target.type != "Medication":
            continue
        key = target.relative
        if key not in held:
            out[key] = key
    return out


# --- prefetch values ------------------------------------------------------------------------

@dataclass
class KeyData:
    """What one prefetch key gave: resources, or failed (the client or the fetch failed)."""

    resources: list[JSON]
    failed: bool = False
    next_url: str | None = None   # a prefetched search Bundle that has more pages
    fetched: bool = False         # read from fhirServer by the service (not sent by the client)


def read_prefetch_value(key: str, value: Any) -> KeyData:
    """A prefetch value as sent: null (nothing there), an OperationOutcome (the client tried and
    failed), a Bundle (search results) or one resource (a read)."""
    where = f"prefetch.{key}"
    if value is None:
        return KeyData([])
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise _fail(f"{where} must be a FHIR resource or null", where, "structure")
    rtype = value["resourceType"]
    if rtype == "OperationOutcome":
        return KeyData([], failed=True)
    if rtype == "Bundle":
        out = []
        failed = False
        for entry in dicts(value.get("entry")):
            if as_dict(entry.get("search")).get("mode") == "outcome" or as_dict(
                    entry.get("resource")).get("resourceType") == "OperationOutcome":
                # choice: an error in the search's own outcome (e.g. "too many results")
                # means the results may be incomplete: the key is reported as unavailable.
                issues = dicts(as_dict(entry.get("resource")).get("issue"))
                failed = failed or any(i.get("severity") in ("error", "fatal") for i in issues)
                continue
            res = entry.get("resource")
            if isinstance(res, dict) and isinstance(res.get("resourceType"), str):
                out.append(res)
        nxt = next((as_str(link.get("url")) for link in dicts(value.get("link"))
                    if link.get("relation") == "next"), None)
        return KeyData(out, failed=failed, next_url=nxt)
    return KeyData([value])


# --- the adapter: a hook call -> the assembler's pieces -------------------------------------

def from_hook(call: HookCall, data: Mapping[str, KeyData], now: datetime, profile: str,
              orders: list[JSON] | None = None, mode: str = "order") -> CheckRequest:
    """The CheckRequest of one hook call; ``data`` holds every prefetch key, prefetched or
    fetched. Keys that failed go to ``unavailable`` (the context.unavailable rule names them).
    ``orders``: the record's orders a review checks (patient-view, service/cds/review.py)
    instead of the hook context's."""
    pid = call.patient_id
    patient_data = data.get("patient", KeyData([]))
    patient = next((r for r in patient_data.resources if r.get("resourceType") == "Patient"
                    and r.get("id") in (pid, None)), None)
    context = [Source(r, key="context") for r in call.other_drafts]
    context += [Source(r, key=key) for key, kd in data.items() if key != "patient"
                for r in kd.resources]
    hook = call.service.hook
    return assemble(Pieces(
        hook, "hook", now, profile,
        orders=[Source(r) for r in (call.orders_json if orders is None else orders)],
        patient=Source(patient) if patient is not None else None,
        context=context,
        unavailable=[key for key, kd in data.items() if kd.failed],
        mode=mode, hook=hook, patient_id=pid, patient_fetched=patient_data.fetched,
        patient_label=("the patient read from fhirServer" if patient_data.fetched
                       else "prefetch.patient"),
        reviewed=orders is not None))

