"""Turn the shapes real clients send into R4 before anything reads them.

Normalises in place on a private copy: STU3 dose fields on the Dosage, ``doseAndRate`` as an
object, Bundle without ``type``, MedicationRequest without ``intent``, and dateTimes written
without an offset (read in the offset of the check time, clinical-rules section 1).
"""

from __future__ import annotations

import re
from datetime import tzinfo
from typing import Any

from ..fhirjson import JSON

_NO_OFFSET = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})(:\d{2}(\.\d+)?)?$")
_DOSE_KEYS = ("doseQuantity", "doseRange", "rateQuantity", "rateRatio", "rateRange")
_MAX_DEPTH = 64


def offset_text(tz: tzinfo | None) -> str:
    if tz is None:
        return "Z"
    from datetime import datetime

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


def normalise_resource(resource: JSON, offset: str, depth: int = 0,
                       dates_fixed: bool = False) -> JSON:
    """Normalise one resource (and its contained resources) in place."""
    rtype = resource.get("resourceType")
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
