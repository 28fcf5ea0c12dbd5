"""The native front door's adapters: a Parameters or a Bundle body -> the assembler's pieces
(``POST /MedicationRequest/$check``, an NDJSON line, the CLI).

They only say where the pieces are in the body (and refuse a body that is not the shape of
its door); everything else (normalising, validating, choosing a record's orders, the context
checks, the statuses) is service/assemble/core.py, the same for every door.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..checkrequest import CheckRequest
from ..errors import Problem
from ..fhirjson import JSON, as_dict, as_str, parse_datetime_range
from ..knowledge import Knowledge
from .core import Pieces, Source, assemble
from .normalise import conform_cardinality
from .policy import refuse_one

_ORDERS = "Parameters.parameter.where(name='order')"
_PATIENT = "Parameters.parameter.where(name='patient')"


def parse_body(body: Any, now: datetime, default_profile: str, kb: Knowledge,
               door: str | None = None) -> CheckRequest:
    """A native body (Parameters or Bundle) -> CheckRequest. ``door`` names the door for the
    status table when it is not the body's own (an NDJSON line)."""
    if not isinstance(body, dict):
        raise refuse_one("body-invalid", door or "parameters",
                         "the body is not a FHIR resource (a JSON object is expected)",
                         code="structure")
    rtype = body.get("resourceType")
    if not isinstance(rtype, str):
        raise refuse_one("body-invalid", door or "parameters",
                         "the body is not a FHIR resource: resourceType is missing",
                         code="structure")
    if rtype == "Parameters":
        return from_parameters(body, now, default_profile, door or "parameters")
    if rtype == "Bundle":
        return from_bundle(body, now, default_profile, door or "bundle", kb=kb)
    # only a body of another resource type needs the models here (unknown or not checkable?)
    from fhir.resources.R4B import get_fhir_model_class  # lazy: the R4B models are large

    try:
        get_fhir_model_class(rtype)
    except (KeyError, ValueError) as exc:
        raise refuse_one("body-invalid", door or "parameters", f"unknown resourceType {rtype!r}",
                         code="structure") from exc
    raise refuse_one(
        "not-checkable", door or "parameters",
        f"a {rtype} cannot be checked: send a Parameters resource or a Bundle holding the "
        "MedicationRequest(s) and the Patient", code="not-supported")


def from_parameters(body: JSON, now: datetime, default_profile: str,
                    door: str = "parameters") -> CheckRequest:
    """Orders, patient and context are the parameters of those names; checkTime and profile
    may be given."""
    params = body.get("parameter", [])
    if not isinstance(params, list):
        raise refuse_one("body-invalid", door, "Parameters.parameter must be a list",
                         "Parameters.parameter")
    check_time = now
    profile = default_profile
    given: dict[str, list[JSON]] = {"order": [], "patient": [], "context": []}
    for i, p in enumerate(params):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise refuse_one("body-invalid", door, f"{where} must be an object with a name",
                             where)
        name = p["name"]
        if name in given:
            res = p.get("resource")
            if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                raise refuse_one("body-invalid", door, f"{where} ({name}) must carry a resource",
                                 where)
            given[name].append(res)
        elif name == "checkTime":
            check_time = _check_time(p.get("valueDateTime", p.get("valueInstant")), door)
        elif name == "profile":
            code = p.get("valueCode", p.get("valueString"))
            if not isinstance(code, str) or code not in {"us", "uk"}:
                raise refuse_one("body-invalid", door, "profile must be the code us or uk",
                                 f"{where}.valueCode")
            profile = code
        else:
            raise refuse_one("body-invalid", door,
                             f"unknown parameter {name!r} (expected order, patient, context, "
                             "checkTime, profile)", where, "not-supported")
    orders, patients = given["order"], given["patient"]
    if not orders:
        raise refuse_one("no-order", door, "no MedicationRequest to check: give at least one "
                         "order parameter", _ORDERS, "required")
    if len(patients) > 1:
        raise refuse_one("several-patients", door, "more than one patient parameter",
                         _PATIENT, "processing")
    if not patients:
        # interfaces.md section 2: patient is 1..1 unless the service reads it from
        # FHIR_SERVER_URL (service/fhir_input/server.py adds it then); never answer about
        # "Patient/unknown".
        raise refuse_one("no-patient", door, "no patient: give the Patient as the patient "
                         "parameter", _PATIENT, "required")
    for n, res in enumerate(orders):
        if res.get("resourceType") != "MedicationRequest":
            raise refuse_one("body-invalid", door, f"order {n + 1} is a "
                             f"{res.get('resourceType')}, not a MedicationRequest",
                             f"{_ORDERS}[{n}]")
    if patients[0].get("resourceType") != "Patient":
        raise refuse_one("body-invalid", door,
                         f"the patient parameter is a {patients[0].get('resourceType')}",
                         _PATIENT)
    return assemble(Pieces(
        door, "parameters", check_time, profile,
        orders=[Source(res, f"{_ORDERS}[{n}]") for n, res in enumerate(orders)],
        patient=Source(patients[0], _PATIENT),
        context=[Source(res, f"Parameters.parameter.where(name='context')[{n}]")
                 for n, res in enumerate(given["context"])]))


def _check_time(value: Any, door: str) -> datetime:
    r = parse_datetime_range(value, None)
    if r is None:
        raise refuse_one("body-invalid", door, "checkTime is not a valid dateTime",
                         "Parameters.parameter.where(name='checkTime').valueDateTime")
    return r.low


def from_bundle(body: JSON, now: datetime, default_profile: str, door: str = "bundle", *,
                kb: Knowledge) -> CheckRequest:
    """A record: every entry's resource; the orders are its drafts, else its active baclofen
    orders (review)."""
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        raise refuse_one("body-invalid", door, "Bundle.entry must be a list", "Bundle.entry")
    conform_cardinality(body, "Bundle")   # the envelope; each resource is the assembler's
    record: list[Source] = []
    notes: list[Problem] = []
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict):
            notes.append(_entry_skipped(f"{where} skipped: not an object", where))
            continue
        if as_dict(entry.get("search")).get("mode") == "outcome":
            continue
        res = entry.get("resource")
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            notes.append(_entry_skipped(f"{where} skipped: it holds no resource", where))
            continue
        record.append(Source(res, f"{where}.resource", full_url=as_str(entry.get("fullUrl"))))
    return assemble(Pieces(door, "bundle", now, default_profile, record=record, notes=notes,
                           kb=kb))


def _entry_skipped(message: str, where: str) -> Problem:
    return Problem(message, "structure", where, "warning")
