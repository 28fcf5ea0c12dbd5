"""Which medicine a resource names, by which route, at which strength (clinical-rules section 1).

A MedicationRequest, MedicationStatement, MedicationDispense or MedicationAdministration names
its medicine by a concept or a Medication reference. ``identify`` reads it (concept, the
Medication, every name, baclofen or not); ``Identified`` does that once per resource in a call.
The product tables (codes, brands, ATC) are service/facts/products.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..clinical.units import UnitKind, UnitTable
from ..fhirjson import JSON, as_dict, as_number, as_str, codings, concept_texts, dicts, has_code
from ..knowledge import Knowledge
from ..model import Route
from ..wording import fmt
from . import products

Resolve = Callable[[Any, JSON], JSON | None]
"""Resolve a Reference (dict) seen inside a resource to the resource it names, or None."""

_STRENGTH_RE = re.compile(
    r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>mg|mcg|ug|µg|g)\b"
    r"(?:\s*(?:/|per)\s*(?P<den>\d+(?:\.\d+)?)?\s*(?P<den_unit>ml|mL|milliliters?|millilitres?)\b)?",
    re.IGNORECASE,
)


# --- the drug -----------------------------------------------------------------------------

def medication_of(order: JSON, resolve: Resolve) -> tuple[JSON, JSON | None]:
    """(the medication CodeableConcept, the Medication resource or None)."""
    concept = as_dict(order.get("medicationCodeableConcept"))
    med = None
    ref = order.get("medicationReference")
    if isinstance(ref, dict):
        med = resolve(ref, order)
        if med is not None and med.get("resourceType") != "Medication":
            med = None
        if med is not None:
            concept = as_dict(med.get("code")) or concept
        elif not concept and as_str(ref.get("display")):
            concept = {"text": ref["display"]}
    return concept, med


@dataclass(frozen=True)
class Drug:
    """The medicine a resource names, identified."""

    concept: JSON                  # the medication concept (the Medication's code if resolved)
    med: JSON | None               # the Medication resource, or None
    names: tuple[str, ...]         # every text naming it (service/facts/products.py)
    baclofen: bool                 # by code, word or brand (clinical-rules section 1)


def identify(resource: JSON, resolve: Resolve, kb: Knowledge) -> Drug:
    """The medicine of a request, statement, dispense or administration."""
    concept, med = medication_of(resource, resolve)
    names = products.names_of(concept, med)
    return Drug(concept, med, tuple(names), products.is_baclofen(concept, med, kb, names))


class Identified:
    """Every resource's medicine identified once per call: keyed by the resource object (the
    same JSON is an order, a regimen of the history and a medicine in use)."""

    def __init__(self, resolve: Resolve, kb: Knowledge):
        self.resolve = resolve
        self.kb = kb
        self._seen: dict[int, tuple[JSON, Drug]] = {}

    def __call__(self, resource: JSON) -> Drug:
        hit = self._seen.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
        drug = identify(resource, self.resolve, self.kb)
        self._seen[id(resource)] = (resource, drug)  # the resource kept: its id stays its own
        return drug


def names_baclofen(resource: JSON, resolve: Resolve, kb: Knowledge) -> bool:
    """The medicine of a request, statement or dispense is baclofen (read before its dose,
    which only a baclofen resource needs)."""
    concept, med = medication_of(resource, resolve)
    return products.is_baclofen(concept, med, kb)


# --- the route ----------------------------------------------------------------------------

def words(text: str) -> set[str]:
    """The lower-case words of a text."""
    return set(re.findall(r"[a-z]+", text.lower()))


def _names_intrathecal(text: str, route_words: list[str]) -> bool:
    """The route text names the intrathecal route.

    choice: a short abbreviation ("IT") counts only when written in capitals, so that route text
    such as "by mouth, take it with food" stays oral; longer words match in any case.
    """
    tokens = re.findall(r"[A-Za-z]+", text)
    for word in route_words:
        w = str(word)
        if len(w) <= 2:
            if w.upper() in tokens:
                return True
        elif any(t.lower() == w.lower() for t in tokens):
            return True
    return False


def route_of(order: JSON, concept: JSON, med: JSON | None, kb: Knowledge,
             names: Sequence[str] | None = None) -> Route:
    """Intrathecal or oral (clinical-rules section 1). ``names``: the drug's names when already
    read (``Drug.names``).

    A route given only as text that names the mouth or a tube (``recognition.oral_route_words``)
    counts like a coded oral route and is never overridden by the product name.
    """
    rec = kb.typed.recognition
    snomed = rec.snomed_system
    oral_words = set(rec.oral_route_words)
    coded_route = False
    for dosage in dicts(order.get("dosageInstruction")):
        route = as_dict(dosage.get("route"))
        if has_code(route, snomed, rec.intrathecal_route_snomed):
            return "intrathecal"
        if has_code(route, snomed, rec.oral_route_snomed) or has_code(
            route, snomed, rec.enteral_route_snomed
        ):
            coded_route = True
            continue
        for text in concept_texts(route):
            if _names_intrathecal(text, list(rec.intrathecal_route_words)):
                return "intrathecal"
            if words(text) & oral_words:
                coded_route = True
        if codings(route):
            coded_route = True
    if coded_route:
        return "oral"
    product_texts = list(names) if names is not None else products.names_of(concept, med)
    if med:
        product_texts += concept_texts(med.get("form"))
    for text in product_texts:
        if words(text) & set(rec.intrathecal_product_words):
            return "intrathecal"
    if products.names_intrathecal_brand(product_texts, kb):
        return "intrathecal"
    return "oral"


# --- strength -----------------------------------------------------------------------------

def quantity_unit(q: JSON, table: UnitTable) -> UnitKind | None:
    """A Quantity's unit: the UCUM code first, then the unit text."""
    for candidate in (as_str(q.get("code")), as_str(q.get("unit"))):
        if candidate:
            kind = table.kind(candidate)
            if kind:
                return kind
    return None


def _mass_mg(q: JSON, table: UnitTable) -> Fraction | None:
    value = as_number(q.get("value"))
    unit = quantity_unit(q, table)
    if value is None or unit is None or unit[0] != "mass":
        return None
    return value * table.mass_factor[unit[1]]


def _doubled_strength(ratio: JSON, table: UnitTable) -> tuple[str, Fraction] | None:
    """A strength whose numerator and denominator have the same value and unit is the amount
    written twice (Epic: ``15 MG/5ML`` over ``15 MG/5ML``): read the numerator as the strength
    (50 mg per unit; 15 mg per 5 mL is 3 mg/mL), never the ratio 1."""
    num, den = as_dict(ratio.get("numerator")), as_dict(ratio.get("denominator"))
    value = as_number(num.get("value"))
    unit = (as_str(num.get("unit")) or as_str(num.get("code")) or "").strip()
    den_unit = (as_str(den.get("unit")) or as_str(den.get("code")) or "").strip()
    if value is None or value <= 0 or not unit or value != as_number(den.get("value")) or (
            unit.lower() != den_unit.lower()):
        return None
    m = _STRENGTH_RE.fullmatch(f"{fmt(value, 6)} {unit}".replace(" /", "/"))
    if m is None:
        m = _STRENGTH_RE.fullmatch(f"{fmt(value, 6)}{unit}")
    if m is None:
        return None
    mg_amount = table.mass_mg(value, m.group("unit"))
    if mg_amount is None:
        return None
    if not m.group("den_unit"):
        return "count", mg_amount
    per = Fraction(m.group("den")) if m.group("den") else Fraction(1)
    return ("volume", mg_amount / per) if per > 0 else None


def strengths(concept: JSON, med: JSON | None, table: UnitTable,
              names: Sequence[str] | None = None) -> dict[str, Fraction]:
    """mg per unit ('count') and mg per mL ('volume') from the Medication, else the name.
    ``names``: the drug's names when already read."""
    found: dict[str, Fraction] = {}
    for ing in dicts((med or {}).get("ingredient")):
        ratio = as_dict(ing.get("strength"))
        doubled = _doubled_strength(ratio, table)
        if doubled is not None:
            found.setdefault(*doubled)
            continue
        num = _mass_mg(as_dict(ratio.get("numerator")), table)
        den_q = as_dict(ratio.get("denominator"))
        den_value = as_number(den_q.get("value"))
        if den_value is None and not den_q:
            den_value = Fraction(1)
        den_unit = quantity_unit(den_q, table) if den_q else ("count", "count")
        if num is None or den_value is None or den_value <= 0 or den_unit is None:
            continue
        kind = den_unit[0]
        if kind == "mass":
            continue
        found.setdefault(kind, num / den_value)
    if found:
        return found
    for name in names if names is not None else products.names_of(concept, med):
        for m in _STRENGTH_RE.finditer(name):
            mg = table.mass_mg(Fraction(m.group("num")), m.group("unit"))
            if mg is None:
                continue
            if m.group("den_unit"):
                den = Fraction(m.group("den")) if m.group("den") else Fraction(1)
                if den > 0:
                    found.setdefault("volume", mg / den)
            else:
                found.setdefault("count", mg)
        if found:
            break
    return found
