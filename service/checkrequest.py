"""The CheckRequest every front door hands to the engine, and the references inside it.

Plain data at the bottom layer (no FHIR models, no Flask), so the engine, the facts and the
output read it without importing the assembler; ``service/assemble/core.py`` is the one place
one is built.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import Problem
from .fhirjson import JSON, as_dict, as_str, dicts
from .fhirref import relative

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
        key = relative(ref)
        return self._by_key.get(key) if key is not None else None


def item_for(resource: JSON, full_url: str | None = None) -> Item:
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rid, str) and rid:
        return Item(resource, f"{rtype}/{rid}", True)
    if full_url:
        return Item(resource, full_url, False)
    digest = json.dumps(resource, sort_keys=True, default=str)
    return Item(resource, f"urn:uuid:{uuid.uuid5(_UUID_NS, digest)}", False)
