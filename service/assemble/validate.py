"""The tolerant reading of what must be valid: the orders and the Patient through the R4B
models (invalid content no rule reads is left out, with an information issue), and the shape of
the context elements the rules read.

Used only by the assembler (service/assemble/core.py); the renderer's check of id-less
resources is service/fhirmodel.py.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import ValidationError

from ..checkrequest import CONTEXT_TYPES, Item
from ..errors import Problem, ServiceError, bad_request
from ..fhirjson import JSON, parse_datetime_range
from ..fhirmodel import expression as fhirpath

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
# Digests of the resources the R4B model took whole (nothing left out, no error): the model
# check is a function of the resource's content alone, and the same Patient, or the same draft
# order (order-select then order-sign, a retried call), comes call after call. Building the
# model costs about 260 us for a typical order, the digest about 16 (bench/cpu_sign.py).
_VALID_DIGESTS: dict[bytes, None] = {}
_VALID_DIGESTS_MAX = 4096


def _content_digest(resource: JSON) -> bytes | None:
    """A digest of the resource's JSON with its keys sorted (None: not plain JSON)."""
    try:
        text = json.dumps(resource, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def validate_model(resource: JSON, what: str) -> list[Problem]:
    """Validate an order or the Patient with the R4B model, reading tolerantly.

    Invalid content in an element no rule needs is left out (in place) and named in the
    returned information issues. In a dosage line, anything invalid but the route makes the
    line's dose and schedule unreadable (they are left out, so the dose rules say the dose
    could not be checked instead of judging half a line). Invalid content in what a rule needs
    to check at all (the order's status, patient or medicine, a dosage route, the patient's
    birth date or gender) is a 400 naming every bad field."""
    # commands that never validate (the review's grouping, the watch receiver) do not pay
    from fhir.resources.R4B import get_fhir_model_class  # lazy: the R4B models are large

    rtype = str(resource.get("resourceType"))
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError) as exc:
        raise bad_request(f"{what}: unknown resourceType {rtype!r}", code="structure") from exc
    notes: list[Problem] = []
    digest = _content_digest(resource)
    for attempt in range(_MAX_PRUNE_ROUNDS):
        if attempt == 0 and digest in _VALID_DIGESTS:
            break  # the model took this very content whole before
        try:
            model.model_validate(resource)
            if attempt == 0 and digest is not None:
                if len(_VALID_DIGESTS) >= _VALID_DIGESTS_MAX:
                    _VALID_DIGESTS.clear()
                _VALID_DIGESTS[digest] = None
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
        expression = fhirpath(rtype, tuple(err.get("loc", ())))
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
    expression = fhirpath(rtype, loc)
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


def usable_context(item: Item) -> str | None:
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


def has_medication(order: JSON) -> bool:
    """The order names its medicine (a draft being written may not have one yet)."""
    return any(isinstance(order.get(k), dict) and order.get(k)
               for k in ("medicationCodeableConcept", "medicationReference"))
