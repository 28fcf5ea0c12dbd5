"""A CDS Hooks call -> one CheckRequest (hook set, mode "order").

``parse_call`` validates the body (400 with an OperationOutcome naming the fault);
``build_request`` turns the orders of the hook context plus the prefetched (or fetched) data
into the same CheckRequest the FHIR endpoint builds, so both paths run the same checker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import Problem, ServiceError, bad_request
from ..fhir_input.normalise import normalised_copy, offset_text
from ..fhir_input.request import (
    CheckRequest,
    Item,
    ResourceIndex,
    _check_subjects,
    _usable_context,
    has_medication,
    item_for,
    validate_model,
)
from ..fhirjson import JSON, as_dict, as_str, dicts
from ..fhirref import parse_reference
from .discovery import CdsService

ORDER_SELECT = "order-select"
STOP_STATUSES = frozenset({"stopped", "cancelled"})


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
    return bad_request(message, expression, code)


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
        # The order to check cannot be had: CDS Hooks answers 412 here.
        raise ServiceError(412, [Problem(
            "context.selections names orders that are not in context.draftOrders: "
            + ", ".join(missing[:10]), "not-found", "context.selections")])
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


def _unidentified(orders: list[Item], req: CheckRequest) -> list[str]:
    """Orders whose drug cannot be known: a Medication reference that could not be read, with
    no code or name to fall back on."""
    out = []
    for it in orders:
        ref = as_dict(it.resource.get("medicationReference"))
        if not ref or it.resource.get("medicationCodeableConcept"):
            continue
        if req.resolve(ref, it.resource) is None and as_str(ref.get("display")) is None:
            out.append(f"{it.ref} ({as_str(ref.get('reference')) or 'no reference'})")
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


# --- the CheckRequest -----------------------------------------------------------------------

def build_request(
    call: HookCall,
    data: Mapping[str, KeyData],
    now: datetime,
    profile: str,
) -> CheckRequest:
    """The CheckRequest of one hook call; ``data`` holds every prefetch key, prefetched or
    fetched. Keys that failed go to ``unavailable`` (the context.unavailable rule names them)."""
    offset = offset_text(now.tzinfo)
    unavailable = [key for key, kd in data.items() if kd.failed]
    index = ResourceIndex()
    warnings: list[Problem] = []

    orders: list[Item] = []
    stopped: list[Item] = []
    for n, raw in enumerate(call.orders_json):
        res = normalised_copy(raw, offset)
        if res.get("resourceType") != "MedicationRequest":
            raise _fail(f"selected order {n + 1} is a {res.get('resourceType')}, not a "
                        "MedicationRequest", "context.selections", "not-supported")
        what = f"order {n + 1} ({res.get('resourceType')}/{res.get('id')})"
        if not has_medication(res):
            # a draft still being written (order-select fires before a medicine is chosen):
            # nothing to check yet, answered 200 with no card for it
            warnings.append(Problem(f"{what} names no medication yet: nothing to check",
                                    "informational", None, "information"))
            continue
        warnings += validate_model(res, what)
        item = item_for(res)
        if res.get("status") in STOP_STATUSES:
            # clinical-rules section 1: a stop is checked only when it comes as a Parameters
            # order; CDS Hooks has no hook that carries one. The order stays as history.
            warnings.append(Problem(
                f"{item.ref}: an order with status {res.get('status')!r} is not checked "
                "through CDS Hooks (no hook carries a stop); check the stop with "
                "POST /MedicationRequest/$check", "not-supported", None, "warning"))
            stopped.append(item)
            continue
        orders.append(item)

    pid = call.patient_id
    patient: Item | None = None
    patient_data = data.get("patient", KeyData([]))
    for res in patient_data.resources:
        if res.get("resourceType") == "Patient" and res.get("id") in (pid, None):
            res = normalised_copy(res, offset)
            res.setdefault("id", pid)
            if not patient_data.fetched:
                warnings += validate_model(res, "prefetch.patient")  # the client's data: 400
            else:
                try:
                    warnings += validate_model(res, "the patient read from fhirServer")
                except ServiceError as exc:
                    # The server's data, not the caller's mistake: the patient is unavailable.
                    warnings.extend(Problem(p.message, p.code, None, "warning")
                                    for p in exc.problems)
                    break
            patient = item_for(res)
            break
    if patient is None:
        # choice: when the Patient cannot be had the orders are still checked (the dose
        # ceilings do not need it) against a bare Patient carrying only the id, and
        # context.unavailable says what could not be checked.
        patient = Item({"resourceType": "Patient", "id": pid}, f"Patient/{pid}", True)
        if "patient" not in unavailable:
            unavailable.insert(0, "patient")

    seen = {it.ref for it in orders + stopped} | {patient.ref}
    context: list[Item] = list(stopped)
    sources: list[tuple[str, JSON]] = [("context", r) for r in call.other_drafts]
    for key, kd in data.items():
        if key != "patient":
            sources += [(key, r) for r in kd.resources]
    for key, raw in sources:
        res = normalised_copy(raw, offset)
        item = item_for(res)
        if item.ref in seen:
            continue
        seen.add(item.ref)
        if item.type == "Patient":
            continue
        why = _usable_context(item)
        if why:
            if item.type != "OperationOutcome":
                warnings.append(Problem(f"context {item.type} {item.ref} ({key}) skipped: {why}",
                                        "invalid", None, "warning"))
            continue
        context.append(item)
    for item in [*orders, patient, *context]:
        index.add(item.resource, None if item.has_id else item.ref)
    req = CheckRequest(orders, patient, context, now, profile, "order", call.service.hook,
                       warnings, unavailable, index=index)
    try:
        _check_subjects(req)
    except ServiceError as exc:
        raise ServiceError(400, exc.problems) from exc
    unknown = _unidentified(orders, req)
    if unknown:
        # The order itself cannot be had: which drug it is cannot be read (CDS Hooks: 412).
        raise ServiceError(412, [Problem(
            "the medication of these orders could not be read: " + ", ".join(unknown[:10]),
            "not-found", "context.draftOrders")])
    return req
