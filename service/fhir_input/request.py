"""A Parameters or Bundle body -> one CheckRequest: orders, patient, context, check time.

Orders and the Patient are validated with the fhir.resources R4B models (errors name the
field); context resources are read from normalised JSON and skipped with a warning when they
cannot be used (interfaces.md section 2).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..errors import Problem, ServiceError, bad_request, unprocessable
from ..fhirjson import JSON, as_dict, as_str, dicts, parse_datetime_range
from ..fhirref import parse_reference, relative
from .normalise import normalise_resource, offset_text

CONTEXT_TYPES = frozenset({
    "Observation", "MedicationRequest", "MedicationStatement", "MedicationDispense",
    "MedicationAdministration", "Condition", "Procedure", "Medication",
})
MODES = ("order", "review")
_UUID_NS = uuid.UUID("6f1d3c1e-7b8a-4c55-9a0e-2b9f1c0e6a11")


@dataclass
class Item:
    resource: JSON
    ref: str
    has_id: bool

    @property
    def type(self) -> str:
        return str(self.resource.get("resourceType"))


@dataclass
class CheckRequest:
    orders: list[Item]
    patient: Item | None
    context: list[Item]
    check_time: datetime
    profile: str
    mode: str = "order"
    hook: str | None = None
    warnings: list[Problem] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    index: ResourceIndex | None = None

    def resolve(self, reference: Any, within: JSON | None = None) -> JSON | None:
        return self.index.resolve(reference, within) if self.index else None

    def items(self) -> Iterable[Item]:
        yield from self.orders
        if self.patient:
            yield self.patient
        yield from self.context


class ResourceIndex:
    """References inside one request: fullUrl, Type/id, absolute URLs, and #contained."""

    def __init__(self) -> None:
        self._by_key: dict[str, JSON] = {}

    def add(self, resource: JSON, full_url: str | None = None) -> None:
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if isinstance(rtype, str) and isinstance(rid, str):
            self._by_key.setdefault(f"{rtype}/{rid}", resource)
        if full_url:
            self._by_key.setdefault(full_url, resource)

    def discard(self, resource: JSON) -> None:
        """Forget a resource (a skipped context resource must not be used through a reference
        either)."""
        for key in [k for k, r in self._by_key.items() if r is resource]:
            del self._by_key[key]

    def urn_entries(self) -> list[tuple[str, JSON]]:
        """Resources known by a ``urn:`` fullUrl and having no id (Bundle entries)."""
        return [(key, res) for key, res in self._by_key.items()
                if key.startswith("urn:") and not as_str(res.get("id"))]

    def resolve(self, reference: Any, within: JSON | None = None) -> JSON | None:
        ref = as_str(as_dict(reference).get("reference"))
        if ref is None:
            return None
        if ref.startswith("#"):
            for contained in dicts((within or {}).get("contained")):
                if contained.get("id") == ref[1:]:
                    return contained
            return None
        if ref in self._by_key:
            return self._by_key[ref]
        tail = relative(ref)
        return self._by_key.get(tail) if tail is not None else None


def item_for(resource: JSON, full_url: str | None = None) -> Item:
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rid, str) and rid:
        return Item(resource, f"{rtype}/{rid}", True)
    if full_url:
        return Item(resource, full_url, False)
    digest = json.dumps(resource, sort_keys=True, default=str)
    return Item(resource, f"urn:uuid:{uuid.uuid5(_UUID_NS, digest)}", False)


# --- validation -----------------------------------------------------------------------------

def _expression(rtype: str, loc: tuple[Any, ...]) -> str:
    path = rtype
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


# Elements a rule reads that cannot be left out when invalid: without them the order or the
# patient cannot be checked at all (400). Everything else that is invalid is left out with an
# information issue (issue 13: invalid content in elements no rule reads never rejects a call).
_PROTECTED: dict[str, frozenset[str]] = {
    "MedicationRequest": frozenset({"resourceType", "status", "subject",
                                    "medicationCodeableConcept", "medicationReference"}),
    "Patient": frozenset({"resourceType", "birthDate", "gender"}),
}
_DOSE_CONTENT = ("doseAndRate", "timing", "maxDosePerPeriod", "maxDosePerAdministration",
                 "extension")
_MAX_PRUNE_ROUNDS = 8


def validate_model(resource: JSON, what: str) -> list[Problem]:
    """Validate an order or the Patient with the R4B model, reading tolerantly.

    Invalid content in an element no rule needs is left out (in place) and named in the
    returned information issues. In a dosage line, anything invalid but the route makes the
    line's dose and schedule unreadable (they are left out, so the dose rules say the dose
    could not be checked instead of judging half a line). Invalid content in what a rule needs
    to check at all (the order's status, patient or medicine, a dosage route, the patient's
    birth date or gender) is a 400 naming every bad field."""
    from fhir.resources.R4B import get_fhir_model_class

    rtype = str(resource.get("resourceType"))
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError) as exc:
        raise bad_request(f"{what}: unknown resourceType {rtype!r}", code="structure") from exc
    notes: list[Problem] = []
    for _ in range(_MAX_PRUNE_ROUNDS):
        try:
            model.model_validate(resource)
            break
        except ValidationError as exc:
            errors = exc.errors()
            fatal = [e for e in errors if _protected(rtype, tuple(e.get("loc", ())))]
            if fatal or not errors:
                raise _invalid(rtype, what, fatal or errors) from exc
            touched: set[tuple[Any, ...]] = set()
            for err in errors:
                note = _prune(resource, rtype, what, tuple(err.get("loc", ())), err)
                if note is not None:
                    notes.append(note)
                    touched.add(tuple(err.get("loc", ()))[:-1])
            for path in sorted(touched, key=len, reverse=True):
                _drop_none_items(resource, path)
        except (ValueError, TypeError, RecursionError) as exc:
            raise bad_request(f"{what}: not a valid {rtype}: {exc}", code="structure") from exc
    else:
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            raise _invalid(rtype, what, exc.errors()) from exc
    if rtype == "MedicationRequest" and not resource.get("status"):
        raise bad_request(f"{what}: MedicationRequest.status is required",
                          "MedicationRequest.status", "required")
    _check_required_codes(resource, rtype, what)
    return notes


def _invalid(rtype: str, what: str, errors: list[Any]) -> ServiceError:
    problems = []
    for err in errors[:20]:
        expression = _expression(rtype, tuple(err.get("loc", ())))
        problems.append(Problem(f"{what}: {expression}: {err.get('msg')}", "structure",
                                expression))
    return ServiceError(400, problems)


def _protected(rtype: str, loc: tuple[Any, ...]) -> bool:
    if not loc:
        return True
    if loc[0] in _PROTECTED.get(rtype, frozenset()):
        return True
    if rtype == "MedicationRequest" and loc[0] == "intent" and len(loc) == 1:
        return False
    # a dosage route decides which rules apply (intrathecal or oral): it is never guessed
    return (rtype == "MedicationRequest" and len(loc) >= 3 and loc[0] == "dosageInstruction"
            and loc[2] == "route")


def _prune(resource: JSON, rtype: str, what: str, loc: tuple[Any, ...], err: Any
           ) -> Problem | None:
    """Leave out the invalid element at ``loc``; the information issue names it."""
    expression = _expression(rtype, loc)
    parent: Any = resource
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return None
    last = loc[-1]
    removed = False
    if rtype == "MedicationRequest" and len(loc) == 2 and loc[0] == "dosageInstruction":
        if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
            parent[last] = {}  # a line that is there but unreadable: never dropped unseen
            return Problem(f"{what}: {expression} is not a Dosage: its dose and schedule were "
                           "not read", "informational", expression, "information")
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        removed = True
    elif isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
        parent[last] = None  # keeps the other items' positions this round; removed after it
        removed = True
    if not removed:
        return None
    message = f"{what}: {expression} left out: {err.get('msg')}"
    if (rtype == "MedicationRequest" and len(loc) >= 3 and loc[0] == "dosageInstruction"
            and isinstance(loc[1], int) and err.get("type") != "extra_forbidden"):
        lines = resource.get("dosageInstruction")
        if isinstance(lines, list) and loc[1] < len(lines) and isinstance(lines[loc[1]], dict):
            for key in _DOSE_CONTENT:
                lines[loc[1]].pop(key, None)
            message += f"; the dose and schedule of dosageInstruction[{loc[1]}] were not read"
    if rtype == "MedicationRequest" and loc == ("intent",):
        resource["intent"] = "order"
    return Problem(message, "informational", expression, "information")


def _drop_none_items(resource: JSON, loc: tuple[Any, ...]) -> None:
    node: Any = resource
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, list):
        node[:] = [v for v in node if v is not None]


# Codes from required value sets that the models accept as any string (FHIR R4).
_REQUIRED_CODES: dict[str, dict[str, frozenset[str]]] = {
    "MedicationRequest": {
        "status": frozenset({"active", "on-hold", "cancelled", "completed", "entered-in-error",
                             "stopped", "draft", "unknown"}),
        "intent": frozenset({"proposal", "plan", "order", "original-order", "reflex-order",
                             "filler-order", "instance-order", "option"}),
    },
    "Patient": {"gender": frozenset({"male", "female", "other", "unknown"})},
}


def _check_required_codes(resource: JSON, rtype: str, what: str) -> None:
    for element, allowed in _REQUIRED_CODES.get(rtype, {}).items():
        value = resource.get(element)
        if value is not None and value not in allowed:
            expression = f"{rtype}.{element}"
            raise bad_request(
                f"{what}: {expression}: {value!r} is not one of {', '.join(sorted(allowed))}",
                expression, "code-invalid")


# The elements of context resources that rules read, checked for their JSON shape. Context is
# read from normalised JSON, not through the models (architecture: validate the orders and the
# Patient; read the rest), so these checks stand in for validation where a wrong shape would
# otherwise be read as "absent".
_CONTEXT_DOSAGE = {"MedicationRequest": "dosageInstruction", "MedicationDispense":
                   "dosageInstruction", "MedicationStatement": "dosage"}
_CONTEXT_DATES = {
    "Observation": ("effectiveDateTime", "issued"),
    "Condition": ("onsetDateTime", "abatementDateTime", "recordedDate"),
    "Procedure": ("performedDateTime",),
    "MedicationRequest": ("authoredOn",),
    "MedicationStatement": ("effectiveDateTime", "dateAsserted"),
    "MedicationDispense": ("whenHandedOver", "whenPrepared"),
    "MedicationAdministration": ("effectiveDateTime",),
}
_CONTEXT_PERIODS = {"Observation": "effectivePeriod", "MedicationStatement": "effectivePeriod",
                    "MedicationAdministration": "effectivePeriod",
                    "Procedure": "performedPeriod"}


def _usable_context(item: Item) -> str | None:
    """Why a context resource cannot be used, or None (the warning names the element)."""
    r = item.resource
    t = item.type
    if t not in CONTEXT_TYPES:
        return f"a {t} is not a resource the checker reads"
    if t in {"MedicationRequest", "MedicationStatement", "MedicationDispense",
             "MedicationAdministration"} and not (
        isinstance(r.get("medicationCodeableConcept"), dict)
        or isinstance(r.get("medicationReference"), dict)
    ):
        return "it names no medication"
    if t in {"Observation", "Procedure", "Condition"} and not isinstance(r.get("code"), dict):
        return f"{t}.code is missing or not a CodeableConcept"
    if t != "Medication" and "status" in r and not isinstance(r.get("status"), str):
        return f"{t}.status is not a code"
    ingredients = r.get("ingredient", [])
    if t == "Medication" and not (
            isinstance(ingredients, list) and all(isinstance(i, dict) for i in ingredients)):
        return "Medication.ingredient is not a list of ingredients"
    key = _CONTEXT_DOSAGE.get(t)
    if key and key in r:
        dosage = r[key]
        if not isinstance(dosage, list) or not all(isinstance(d, dict) for d in dosage):
            return f"{t}.{key} is not a list of Dosage"
    for element in _CONTEXT_DATES.get(t, ()):
        if element in r and parse_datetime_range(r[element]) is None:
            return f"{t}.{element} is not a FHIR dateTime: {str(r[element])[:40]!r}"
    period_key = _CONTEXT_PERIODS.get(t)
    if period_key and period_key in r:
        period = r[period_key]
        if not isinstance(period, dict) or any(
                k in period and parse_datetime_range(period[k]) is None
                for k in ("start", "end")):
            return f"{t}.{period_key} is not a Period of FHIR dateTimes"
    return None


def model_problem(resource: JSON, rtype: str) -> str | None:
    """Why ``resource`` is not a valid R4 ``rtype`` (the first error), or None."""
    from fhir.resources.R4B import get_fhir_model_class

    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors()
        if not errors:
            return "it is not valid FHIR"
        where = _expression(rtype, tuple(errors[0].get("loc", ())))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"it is not valid FHIR: {where}: {errors[0].get('msg')}{more}"
    except (ValueError, TypeError, RecursionError) as exc:
        return f"it is not valid FHIR: {type(exc).__name__}"
    return None


# --- the two body shapes --------------------------------------------------------------------

def parse_body(body: Any, now: datetime, default_profile: str) -> CheckRequest:
    if not isinstance(body, dict):
        raise bad_request("the body is not a FHIR resource (a JSON object is expected)",
                          code="structure")
    rtype = body.get("resourceType")
    if not isinstance(rtype, str):
        raise bad_request("the body is not a FHIR resource: resourceType is missing",
                          code="structure")
    if rtype == "Parameters":
        return parse_parameters(body, now, default_profile)
    if rtype == "Bundle":
        return parse_bundle(body, now, default_profile)
    from fhir.resources.R4B import get_fhir_model_class

    try:
        get_fhir_model_class(rtype)
    except (KeyError, ValueError) as exc:
        raise bad_request(f"unknown resourceType {rtype!r}", code="structure") from exc
    raise unprocessable(
        f"a {rtype} cannot be checked: send a Parameters resource or a Bundle holding the "
        "MedicationRequest(s) and the Patient", code="not-supported")


def _check_time(value: Any, now: datetime) -> datetime:
    r = parse_datetime_range(value, None)
    if r is None:
        raise bad_request("checkTime is not a valid dateTime",
                          "Parameters.parameter.where(name='checkTime').valueDateTime")
    return r.low


def parse_parameters(body: JSON, now: datetime, default_profile: str) -> CheckRequest:
    params = body.get("parameter", [])
    if not isinstance(params, list):
        raise bad_request("Parameters.parameter must be a list", "Parameters.parameter")
    check_time = now
    profile = default_profile
    raw_orders: list[JSON] = []
    raw_patients: list[JSON] = []
    raw_context: list[JSON] = []
    for i, p in enumerate(params):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise bad_request(f"{where} must be an object with a name", where)
        name = p["name"]
        if name in {"order", "patient", "context"}:
            res = p.get("resource")
            if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                raise bad_request(f"{where} ({name}) must carry a resource", where)
            {"order": raw_orders, "patient": raw_patients, "context": raw_context}[name].append(
                res)
        elif name == "checkTime":
            check_time = _check_time(p.get("valueDateTime", p.get("valueInstant")), now)
        elif name == "profile":
            code = p.get("valueCode", p.get("valueString"))
            if not isinstance(code, str) or code not in {"us", "uk"}:
                raise bad_request("profile must be the code us or uk", f"{where}.valueCode")
            profile = code
        else:
            raise bad_request(f"unknown parameter {name!r} (expected order, patient, context, "
                              "checkTime, profile)", where, "not-supported")
    offset = offset_text(check_time.tzinfo)
    for res in raw_orders + raw_patients + raw_context:
        normalise_resource(res, offset)
    if not raw_orders:
        raise unprocessable("no MedicationRequest to check: give at least one order parameter",
                            "Parameters.parameter.where(name='order')", "required")
    if len(raw_patients) > 1:
        raise unprocessable("more than one patient parameter",
                            "Parameters.parameter.where(name='patient')")
    if not raw_patients:
        # interfaces.md section 2: patient is 1..1 unless the service reads it from
        # FHIR_SERVER_URL, which this path does not do; never answer about "Patient/unknown".
        raise unprocessable("no patient: give the Patient as the patient parameter",
                            "Parameters.parameter.where(name='patient')", "required")
    index = ResourceIndex()
    orders = []
    warnings: list[Problem] = []
    for n, res in enumerate(raw_orders):
        if res.get("resourceType") != "MedicationRequest":
            raise bad_request(f"order {n + 1} is a {res.get('resourceType')}, not a "
                              "MedicationRequest", f"Parameters.parameter.where(name='order')[{n}]")
        if not has_medication(res):
            warnings.append(_no_medication_yet(f"order {n + 1}"))
            continue
        warnings += validate_model(res, f"order {n + 1}")
        orders.append(item_for(res))
    patient = None
    if raw_patients:
        res = raw_patients[0]
        if res.get("resourceType") != "Patient":
            raise bad_request(f"the patient parameter is a {res.get('resourceType')}",
                              "Parameters.parameter.where(name='patient')")
        warnings += validate_model(res, "patient")
        patient = item_for(res)
    context = []
    for n, res in enumerate(raw_context):
        item = item_for(res)
        why = _usable_context(item)
        if why:
            warnings.append(_skipped(item, why, f"Parameters.parameter.where(name='context')[{n}]"))
            continue
        context.append(item)
    for item in orders + context + ([patient] if patient else []):
        index.add(item.resource, item.ref if not item.has_id else None)
    req = CheckRequest(orders, patient, context, check_time, profile, "order", None, warnings,
                       index=index)
    _check_subjects(req)
    return req


def parse_bundle(body: JSON, now: datetime, default_profile: str) -> CheckRequest:
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        raise bad_request("Bundle.entry must be a list", "Bundle.entry")
    offset = offset_text(now.tzinfo)
    normalise_resource(body, offset)
    index = ResourceIndex()
    items: list[Item] = []
    warnings: list[Problem] = []
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict):
            warnings.append(Problem(f"{where} skipped: not an object", "structure", where,
                                    "warning"))
            continue
        if as_dict(entry.get("search")).get("mode") == "outcome":
            continue
        res = entry.get("resource")
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            warnings.append(Problem(f"{where} skipped: it holds no resource", "structure", where,
                                    "warning"))
            continue
        normalise_resource(res, offset)
        full_url = as_str(entry.get("fullUrl"))
        item = item_for(res, full_url)
        index.add(res, full_url)
        items.append(item)

    patients = _distinct([it for it in items if it.type == "Patient"])
    if len(patients) != 1:
        raise unprocessable(
            "the Bundle must hold exactly one Patient; it holds "
            f"{len(patients) if patients else 'none'}", "Bundle.entry.resource.ofType(Patient)",
            "required")
    patient = patients[0]
    warnings += validate_model(patient.resource, "patient")
    drafts = [it for it in items
              if it.type == "MedicationRequest" and it.resource.get("status") == "draft"]
    empty = [d for d in drafts if not has_medication(d.resource)]
    for it in empty:
        warnings.append(_no_medication_yet(it.ref))
        drafts.remove(it)
        items.remove(it)
        index.discard(it.resource)
    mode = "order"
    if drafts or empty:
        # drafts whose medicine is not chosen yet are still the orders of this call: they are
        # answered with nothing to check, not by a review of the patient's other orders
        order_items = drafts
    else:
        from ..dosing import is_baclofen, medication_of
        from ..knowledge import load

        kb = load()
        order_items = []
        for it in items:
            if it.type == "MedicationRequest" and it.resource.get("status") == "active":
                concept, med = medication_of(it.resource, lambda ref, w: index.resolve(ref, w))
                if is_baclofen(concept, med, kb):
                    order_items.append(it)
        mode = "review"
        if not order_items:
            raise unprocessable(
                "nothing to check: the Bundle holds no draft MedicationRequest and no active "
                "baclofen MedicationRequest", "Bundle.entry.resource.ofType(MedicationRequest)",
                "not-found")
    for n, it in enumerate(order_items):
        warnings += validate_model(it.resource, f"order {n + 1} ({it.ref})")
    order_ids = {id(it) for it in order_items}
    context = []
    for i, it in enumerate(items):
        if id(it) in order_ids or it.type == "Patient":
            continue
        if it.type not in CONTEXT_TYPES:
            continue  # other resources (Practitioner, Encounter ...) only serve references
        why = _usable_context(it)
        if why:
            warnings.append(_skipped(it, why, f"Bundle.entry[{i}].resource"))
            index.discard(it.resource)
            continue
        context.append(it)
    req = CheckRequest(order_items, patient, context, now, default_profile, mode, None, warnings,
                       index=index)
    _check_subjects(req)
    return req


def has_medication(order: JSON) -> bool:
    """The order names its medicine (a draft being written may not have one yet)."""
    return any(isinstance(order.get(k), dict) and order.get(k)
               for k in ("medicationCodeableConcept", "medicationReference"))


def _no_medication_yet(which: str) -> Problem:
    return Problem(f"{which} names no medication yet: nothing to check until one is chosen",
                   "informational", "MedicationRequest.medication", "information")


def _distinct(items: list[Item]) -> list[Item]:
    seen: dict[str, Item] = {}
    for it in items:
        seen.setdefault(it.ref, it)
    return list(seen.values())


def _skipped(item: Item, why: str, where: str) -> Problem:
    return Problem(f"context {item.type} {item.ref} skipped: {why}", "invalid", where, "warning")


def _check_subjects(req: CheckRequest) -> None:
    """An order written for another patient than the one given is refused (422); a context
    resource about another patient is skipped with a warning.

    choice: a mismatch between MedicationRequest.subject and the Patient is a request the
    checker cannot answer safely, so it fails instead of checking against the wrong patient.
    Another patient's labs or orders must not count either (a false duplicate, a wrong renal
    value), so such context is left out and the warning names it.
    """
    if req.patient is None:
        return
    for n, order in enumerate(req.orders):
        other = _other_patient(req, order.resource)
        if other is not None:
            raise unprocessable(f"order {n + 1} is for {other}, not for {_patient_name(req)}",
                                "MedicationRequest.subject")
    kept = []
    for item in req.context:
        other = _other_patient(req, item.resource)
        if other is not None:
            req.warnings.append(Problem(
                f"context {item.type} {item.ref} skipped: it is for {other}, not for "
                f"{_patient_name(req)}", "invalid", f"{item.type}.subject", "warning"))
            if req.index is not None:
                req.index.discard(item.resource)
            continue
        kept.append(item)
    req.context = kept


def _patient_name(req: CheckRequest) -> str:
    pid = req.patient.resource.get("id") if req.patient else None
    return f"Patient/{pid}" if isinstance(pid, str) and pid else "the patient given"


def _other_patient(req: CheckRequest, resource: JSON) -> str | None:
    """The reference when ``resource.subject`` names a patient other than the one given."""
    if req.patient is None:
        return None
    subject = as_dict(resource.get("subject"))
    ref = as_str(subject.get("reference"))
    if ref is None:
        return None
    target = req.resolve(subject, resource)
    if target is not None:
        if target is not req.patient.resource and target.get("resourceType") == "Patient":
            return ref
        return None
    pid = req.patient.resource.get("id")
    named = parse_reference(ref)
    if named is not None and named.type == "Patient" and pid and named.id != pid:
        return ref
    return None
