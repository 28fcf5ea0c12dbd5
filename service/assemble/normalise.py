"""Turn the shapes real clients send into R4 before anything reads them.

Normalises in place on a private copy:
- cardinality: a single object where R4 has an array is wrapped in one, and a one-item array
  where R4 has a single element is unwrapped, for every element of every resource, decided
  from the R4B models' field types (``_shape``), not from a list of field names;
- STU3 dose fields on the Dosage, Bundle without ``type``, MedicationRequest without
  ``intent``;
- dateTimes written without an offset (read in the offset of the check time, clinical-rules
  section 1).

A valid R4 resource comes out unchanged, and normalising twice equals normalising once
(tests/api/test_real_clients.py holds both as properties).
"""

from __future__ import annotations

import re
import types
import typing
from datetime import datetime, tzinfo
from functools import cache
from typing import Any

from ..fhirjson import JSON

_NO_OFFSET = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})(:\d{2}(\.\d+)?)?$")
_DOSE_KEYS = ("doseQuantity", "doseRange", "rateQuantity", "rateRatio", "rateRange")
_MAX_DEPTH = 64


def offset_text(tz: tzinfo | None) -> str:
    if tz is None:
        return "Z"
    delta = datetime(2000, 1, 1, tzinfo=tz).utcoffset()
    if not delta:
        return "Z"
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def fix_datetime(value: str, offset: str) -> str:
    m = _NO_OFFSET.match(value)
    if not m:
        return value
    return f"{m.group(1)}{m.group(2) or ':00'}{offset}"


def normalised_copy(raw: JSON, offset: str) -> JSON:
    """``normalise_resource`` on a copy of ``raw`` (which is left as it was), the copy and the
    dateTime fixes made in one walk."""
    copy: JSON = _copy_fixing(raw, offset)
    return normalise_resource(copy, offset, dates_fixed=True)


def _copy_fixing(value: Any, offset: str) -> Any:
    if isinstance(value, dict):
        return {k: _copy_fixing(v, offset) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_fixing(v, offset) for v in value]
    if isinstance(value, str) and "T" in value and len(value) < 40:
        return fix_datetime(value, offset)
    return value


# --- cardinality, from the R4B models -------------------------------------------------------

Shape = dict[str, tuple[bool, str | None]]
"""JSON key -> (R4 allows many, the element's own type name when it has elements)."""


@cache
def _shape(type_name: str) -> Shape | None:
    """The elements of an R4 type (resource, datatype or backbone element) and their
    cardinality, read once from its fhir.resources R4B model; None for an unknown type."""
    from fhir.resources.R4B import get_fhir_model_class  # lazy: the R4B models are large

    try:
        model = get_fhir_model_class(type_name)
    except (KeyError, ValueError, AttributeError):
        return None
    shape: Shape = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if not isinstance(extra, dict) or not extra.get("element_property"):
            continue
        many, inner = _unwrap(info.annotation)
        child = getattr(inner, "__name__", "")
        child_type = None
        if child.endswith("Type") and child not in {"ResourceType", "FHIRPrimitiveExtensionType"}:
            child_type = child[: -len("Type")]
        shape[info.alias or name] = (many, child_type)
    return shape


def _unwrap(annotation: Any) -> tuple[bool, Any]:
    """(is a list, the item type) of a model field's annotation (Optional and Annotated off)."""
    many = False
    current = annotation
    for _ in range(6):
        origin = typing.get_origin(current)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = args[0] if args else current
        elif origin in (list, typing.List):  # noqa: UP006 (the models use typing.List)
            many = True
            current = typing.get_args(current)[0]
        elif origin is typing.Annotated:
            current = typing.get_args(current)[0]
        else:
            break
    return many, current


def conform_cardinality(value: JSON, type_name: str, depth: int = 0) -> None:
    """Wrap single objects where R4 has an array, unwrap one-item arrays where it has one
    element, all the way down (in place). Contained and Bundle resources are left to their own
    normalisation; keys the model does not know are left for validation to name."""
    shape = _shape(type_name)
    if shape is None or depth > _MAX_DEPTH:
        return
    for key in list(value):
        spec = shape.get(key)
        if spec is None:
            continue
        many, child_type = spec
        child = value[key]
        if many and child is not None and not isinstance(child, list):
            child = value[key] = [child]
        elif not many and isinstance(child, list) and len(child) == 1:
            child = value[key] = child[0]
        if child_type is None:
            continue
        for item in child if isinstance(child, list) else (child,):
            if isinstance(item, dict):
                conform_cardinality(item, child_type, depth + 1)


def normalise_resource(resource: JSON, offset: str, depth: int = 0,
                       dates_fixed: bool = False) -> JSON:
    """Normalise one resource (and its contained resources) in place."""
    rtype = resource.get("resourceType")
    if isinstance(rtype, str):
        conform_cardinality(resource, rtype)
    if rtype == "MedicationRequest":
        if "intent" not in resource:
            resource["intent"] = "order"
        for dosage in _dicts(resource.get("dosageInstruction")):
            normalise_dosage(dosage)
    elif rtype in {"MedicationStatement", "MedicationDispense"}:
        # (a MedicationAdministration's dosage is a different type, with no doseAndRate)
        key = "dosage" if rtype == "MedicationStatement" else "dosageInstruction"
        for dosage in _dicts(resource.get(key)):
            normalise_dosage(dosage)
    elif rtype == "Bundle" and "type" not in resource:
        resource["type"] = "collection"
    for contained in _dicts(resource.get("contained")):
        if depth < _MAX_DEPTH:
            normalise_resource(contained, offset, depth + 1, dates_fixed)
    if not dates_fixed:
        _fix_datetimes(resource, offset)
    return resource


def normalise_dosage(dosage: JSON) -> None:
    dr = dosage.get("doseAndRate")
    if isinstance(dr, dict):
        dosage["doseAndRate"] = [dr]
    moved = {k: dosage.pop(k) for k in _DOSE_KEYS if k in dosage}
    if moved:
        entry: JSON = {}
        for key in ("doseQuantity", "doseRange"):
            if key in moved and not entry:
                entry[key] = moved[key]
        for key in ("rateQuantity", "rateRatio", "rateRange"):
            if key in moved and not any(k.startswith("rate") for k in entry):
                entry[key] = moved[key]
        existing = dosage.get("doseAndRate")
        # the R4 doseAndRate, when also given, comes first: it is what the order means in R4
        dosage["doseAndRate"] = (existing if isinstance(existing, list) else []) + [entry]
    # STU3 maxDosePerPeriod was a single Ratio; R4 keeps it single too, but some clients send
    # a list: keep the first (the reader accepts both).
    mdp = dosage.get("maxDosePerPeriod")
    if isinstance(mdp, list) and mdp:
        dosage["maxDosePerPeriod"] = mdp[0]


def _fix_datetimes(value: Any, offset: str) -> None:
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key == "contained":
                    continue
                if isinstance(child, str):
                    if "T" in child and len(child) < 40:
                        item[key] = fix_datetime(child, offset)
                elif isinstance(child, dict | list):
                    stack.append(child)
        elif isinstance(item, list):
            for i, child in enumerate(item):
                if isinstance(child, str):
                    if "T" in child and len(child) < 40:
                        item[i] = fix_datetime(child, offset)
                elif isinstance(child, dict | list):
                    stack.append(child)


def _dicts(value: Any) -> list[JSON]:
    if isinstance(value, dict):
        return [value]
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
