"""Dosage and Timing -> mg per dose, administrations per day, schedule steps.

Pure functions over normalised MedicationRequest JSON (clinical-rules section 1). Nothing here
raises on odd input: a dose or schedule that cannot be read becomes a ``problem`` on its line,
which the rules turn into an explicit finding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from fractions import Fraction
from functools import lru_cache
from typing import Any

from .facts import products
from .fhirjson import (
    JSON,
    as_dict,
    as_list,
    as_number,
    as_str,
    codings,
    concept_texts,
    dicts,
    elapsed_days,
    has_code,
    parse_datetime_range,
    parse_instant,
)
from .fhirref import local, relative
from .knowledge import Knowledge
from .model import DoseLine, OrderFacts, Route, Step
from .wording import fmt

Resolve = Callable[[Any, JSON], JSON | None]
"""Resolve a Reference (dict) seen inside a resource to the resource it names, or None."""

_STRENGTH_RE = re.compile(
    r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>mg|mcg|ug|µg|g)\b"
    r"(?:\s*(?:/|per)\s*(?P<den>\d+(?:\.\d+)?)?\s*(?P<den_unit>ml|mL|milliliters?|millilitres?)\b)?",
    re.IGNORECASE,
)


class UnitTable:
    """Unit words and codes from the knowledge data, looked up case-insensitively."""

    def __init__(self, kb: Knowledge):
        units = kb.units
        self.mass: dict[str, str] = {}
        for canonical, aliases in units["mass_aliases"].items():
            for alias in aliases:
                self.mass[str(alias).lower()] = canonical
        self.mass_factor = {k: Fraction(str(v)) for k, v in units["mass_mg_per_unit"].items()}
        self.volume = {str(a).lower() for a in units["volume_aliases"]}
        self.count = {str(a).lower() for a in units["count_aliases"]}

    def kind(self, unit: str) -> tuple[str, str] | None:
        """('mass', 'mg'|'g'|'ug') | ('volume', 'mL') | ('count', 'count') | None."""
        u = unit.strip().lower()
        if u in self.mass:
            return "mass", self.mass[u]
        if u in self.volume:
            return "volume", "mL"
        if u in self.count:
            return "count", "count"
        return None


@lru_cache(maxsize=8)
def unit_table(kb: Knowledge) -> UnitTable:
    """The UnitTable of a knowledge file, built once (it is only read)."""
    return UnitTable(kb)


def quantity_unit(q: JSON, table: UnitTable) -> tuple[str, str] | None:
    """A Quantity's unit: the UCUM code first, then the unit text."""
    for candidate in (as_str(q.get("code")), as_str(q.get("unit"))):
        if candidate:
            kind = table.kind(candidate)
            if kind:
                return kind
    return None


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


def drug_names(concept: JSON, med: JSON | None) -> list[str]:
    """Every text naming the medicine (service/products.py)."""
    return products.names_of(concept, med)


def is_baclofen(concept: JSON, med: JSON | None, kb: Knowledge) -> bool:
    """Baclofen by code, word or brand (clinical-rules section 1; service/products.py)."""
    return products.is_baclofen(concept, med, kb)


def names_baclofen(resource: JSON, resolve: Resolve, kb: Knowledge) -> bool:
    """The medicine of a request, statement or dispense is baclofen (read before its dose,
    which only a baclofen resource needs)."""
    concept, med = medication_of(resource, resolve)
    return is_baclofen(concept, med, kb)


@lru_cache(maxsize=64)
def _word_pattern(word: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)


def _words(text: str) -> set[str]:
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


def route_of(order: JSON, concept: JSON, med: JSON | None, kb: Knowledge) -> Route:
    """Intrathecal or oral (clinical-rules section 1).

    choice: a route given only as text that names the mouth or a tube (oral, PO, by mouth,
    enteral, gastrostomy, NG) counts like a coded oral route and is never overridden by the
    product name.
    """
    rec = kb.recognition
    snomed = rec["snomed_system"]
    coded_route = False
    for dosage in dicts(order.get("dosageInstruction")):
        route = as_dict(dosage.get("route"))
        if has_code(route, snomed, rec["intrathecal_route_snomed"]):
            return "intrathecal"
        if has_code(route, snomed, rec["oral_route_snomed"]) or has_code(
            route, snomed, rec["enteral_route_snomed"]
        ):
            coded_route = True
            continue
        for text in concept_texts(route):
            words = _words(text)
            if _names_intrathecal(text, rec["intrathecal_route_words"]):
                return "intrathecal"
            if words & {"oral", "po", "mouth", "enteral", "gastrostomy", "ng", "tube", "peg"}:
                coded_route = True
        if codings(route):
            coded_route = True
    if coded_route:
        return "oral"
    product_texts = drug_names(concept, med)
    if med:
        product_texts += concept_texts(med.get("form"))
    for text in product_texts:
        if _words(text) & set(rec["intrathecal_product_words"]):
            return "intrathecal"
    if products.names_intrathecal_brand(product_texts, kb):
        return "intrathecal"
    return "oral"


# --- strength -----------------------------------------------------------------------------

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
    mass = table.kind(m.group("unit"))
    if mass is None or mass[0] != "mass":
        return None
    mg_amount = value * table.mass_factor[mass[1]]
    if not m.group("den_unit"):
        return "count", mg_amount
    per = Fraction(m.group("den")) if m.group("den") else Fraction(1)
    return ("volume", mg_amount / per) if per > 0 else None


def strengths(concept: JSON, med: JSON | None, table: UnitTable) -> dict[str, Fraction]:
    """mg per unit ('count') and mg per mL ('volume') from the Medication, else the name."""
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
    for name in drug_names(concept, med):
        for m in _STRENGTH_RE.finditer(name):
            amount = Fraction(m.group("num"))
            unit = table.kind(m.group("unit"))
            if unit is None or unit[0] != "mass":
                continue
            mg = amount * table.mass_factor[unit[1]]
            if m.group("den_unit"):
                den = Fraction(m.group("den")) if m.group("den") else Fraction(1)
                if den > 0:
                    found.setdefault("volume", mg / den)
            else:
                found.setdefault("count", mg)
        if found:
            break
    return found


# --- timing -------------------------------------------------------------------------------

def _period_days(value: Any, unit: Any, kb: Knowledge) -> Fraction | None:
    number = as_number(value)
    unit_s = as_str(unit)
    if number is None or number <= 0 or unit_s not in kb.period_unit_days:
        return None
    return number * kb.period_unit_days[unit_s]


def duration_days(repeat: JSON, kb: Knowledge, tz: Any) -> Fraction | None:
    bd = as_dict(repeat.get("boundsDuration"))
    if bd:
        unit = as_str(bd.get("code")) or as_str(bd.get("unit"))
        return _period_days(bd.get("value"), unit, kb)
    bp = as_dict(repeat.get("boundsPeriod"))
    start = parse_instant(bp.get("start"), tz)
    end_r = parse_datetime_range(bp.get("end"), tz)
    if start is not None and end_r is not None and end_r.high > start:
        # choice: a bounds end given as a bare date includes that whole day.
        end = end_r.high if end_r.precision != "instant" else end_r.low
        return elapsed_days(start, end)
    return None


def administrations_per_day(
    timing: JSON, kb: Knowledge
) -> tuple[Fraction | None, bool, str | None]:
    """(administrations per day, single dose, why unreadable)."""
    repeat = as_dict(timing.get("repeat"))
    freq_raw = repeat.get("frequencyMax", repeat.get("frequency"))
    frequency = as_number(freq_raw)
    if freq_raw is not None and (frequency is None or frequency <= 0):
        return None, False, "the frequency is not a positive number"
    count = as_number(repeat.get("count"))
    per_day: Fraction | None = None
    periods = [p for p in (repeat.get("period"), repeat.get("periodMax")) if p is not None]
    if periods:
        days = [_period_days(p, repeat.get("periodUnit"), kb) for p in periods]
        if any(d is None for d in days):
            return None, False, "the timing period or its unit cannot be read"
        shortest = min(d for d in days if d is not None)
        per_day = (frequency or Fraction(1)) / shortest
    elif frequency is not None and count == 1 and frequency == 1:
        return None, True, None
    if frequency is None and count == 1 and not periods:
        return None, True, None
    # clinical-rules section 1: repeat, else timing.code, else the count of when/timeOfDay
    # entries. Named times with a frequency only say when in the period each dose is given
    # (once a week in the morning is once a week, not once a day).
    if per_day is None:
        per_day = _timing_code(timing, kb)
    when_count = len(as_list(repeat.get("when"))) + len(as_list(repeat.get("timeOfDay")))
    if per_day is None and when_count:
        per_day = Fraction(when_count)
    if per_day is None:
        return None, False, "no frequency, timing code or times of day are given"
    return per_day, False, None


def _timing_code(timing: JSON, kb: Knowledge) -> Fraction | None:
    code = as_dict(timing.get("code"))
    candidates = [as_str(c.get("code")) for c in codings(code)] + [as_str(code.get("text"))]
    for c in candidates:
        if c and c.strip().upper() in kb.timing_codes:
            return kb.timing_codes[c.strip().upper()]
    return None


def _per_day_amount(ratio: JSON, to_mg: Callable[[JSON], Fraction | None], kb: Knowledge
                    ) -> tuple[Fraction, Fraction] | None:
    """A maxDosePerPeriod Ratio as (mg per day, days of its period): the amount divided by the
    days of its period (clinical-rules section 1: 140 mg per week is 20 mg a day; a cap over
    a day or less is scaled to 24 h)."""
    amount = to_mg(as_dict(ratio.get("numerator")))
    den = as_dict(ratio.get("denominator"))
    days = _period_days(
        den.get("value", 1), _period_word(as_str(den.get("code")) or as_str(den.get("unit")),
                                          kb), kb
    )
    if amount is None or days is None:
        return None
    return amount / days, days


def _period_word(unit: str | None, kb: Knowledge) -> str | None:
    """A time unit written as text ("hr", "hour", "day") as its UCUM code (section 6)."""
    if unit is None:
        return None
    aliases = kb.units.get("period_aliases") or {}
    u = unit.strip()
    return str(aliases.get(u.lower(), u)) if u not in kb.period_unit_days else u


# --- one order ------------------------------------------------------------------------------

def read_order(
    order: JSON,
    ref: str,
    resolve: Resolve,
    kb: Knowledge,
    check_time: datetime,
    checked: bool = False,
) -> OrderFacts:
    tz = check_time.tzinfo
    table = unit_table(kb)
    concept, med = medication_of(order, resolve)
    baclofen = is_baclofen(concept, med, kb)
    route = route_of(order, concept, med, kb)
    strength = strengths(concept, med, table)
    names = drug_names(concept, med)

    def to_mg(q: JSON) -> Fraction | None:
        value = as_number(q.get("value"))
        unit = quantity_unit(q, table)
        if value is None or unit is None:
            return None
        kind, canon = unit
        if kind == "mass":
            return value * table.mass_factor[canon]
        return value * strength[kind] if kind in strength else None

    lines: list[DoseLine] = []
    starts: list[datetime] = []
    ends: list[datetime] = []
    for index, dosage in enumerate(dicts(order.get("dosageInstruction"))):
        line = _read_line(index, dosage, to_mg, table, strength, route, kb, tz)
        lines.append(line)
        bp = as_dict(as_dict(as_dict(dosage.get("timing")).get("repeat")).get("boundsPeriod"))
        s = parse_instant(bp.get("start"), tz)
        if s is not None:
            starts.append(s)
        e = parse_datetime_range(bp.get("end"), tz)
        if e is not None:
            ends.append(e.high if e.precision != "instant" else e.low)
    if not lines:
        lines.append(
            DoseLine(
                index=0, sequence=None, dose_mg=None, written="no dosage", written_unit=None,
                per_day=None, problem="the order has no dosage instructions",
            )
        )

    start = min(starts) if starts else parse_instant(order.get("authoredOn"), tz) or check_time
    steps = _steps(lines)
    prior = _reference_keys(as_dict(order.get("priorPrescription")), order, resolve)
    return OrderFacts(
        ref=ref,
        status=as_str(order.get("status")) or "unknown",
        is_baclofen=baclofen,
        route=route,
        name=names[0] if names else "unnamed medicine",
        steps=steps,
        start=start,
        end=max(ends) if ends and len(ends) == len(lines) else None,
        prior_refs=frozenset(prior),
        dose_key=json.dumps(order.get("dosageInstruction"), sort_keys=True, default=str),
        ingredient_names=tuple(n.lower() for n in names),
        checked=checked,
        drug_unknown=not baclofen and not names and not codings(concept),
    )


def _reference_keys(reference: JSON, within: JSON, resolve: Resolve) -> set[str]:
    """Every form under which a Reference may name an order: as written, as ``Type/id`` (an
    absolute or versioned URL included), and as the ``Type/id`` of the resource it resolves to.
    """
    ref = as_str(reference.get("reference"))
    if ref is None:
        return set()
    keys = {ref}
    tail = None if local(ref) else relative(ref)
    if tail is not None:
        keys.add(tail)
    if ref.startswith("#"):
        return keys  # a contained resource's id is local to its container
    target = resolve(reference, within)
    if target is not None and as_str(target.get("id")):
        keys.add(f"{target.get('resourceType')}/{target['id']}")
    return keys


def _steps(lines: list[DoseLine]) -> tuple[Step, ...]:
    """Lines with the same or no sequence add up; different sequences are consecutive steps.

    choice: lines without a sequence in an order that also has sequenced lines apply
    throughout, so they join every step.
    """
    sequences = sorted({ln.sequence for ln in lines if ln.sequence is not None})
    unsequenced = tuple(ln for ln in lines if ln.sequence is None)
    if len(sequences) <= 1:
        return (Step(sequences[0] if sequences else None, tuple(lines)),)
    return tuple(
        Step(seq, tuple(ln for ln in lines if ln.sequence == seq) + unsequenced)
        for seq in sequences
    )


# Epic's dose extensions on a Dosage, read when it has no doseAndRate (issue 13).
_DOSE_EXTENSIONS = {
    "https://open.epic.com/fhir/extensions/ordered-dose": "ordered-dose",
    "https://open.epic.com/fhir/extensions/admin-amount": "admin-amount",
}


def dose_entries(dosage: JSON) -> list[tuple[str, JSON]]:
    """Every dose the line gives, with its type: the ``doseAndRate`` entries with a dose (a
    range by its high end), typed by their ``type`` code (Epic's ``calculated``,
    ``admin-amount``, ``ordered``; ``untyped`` when none), else Epic's dose extensions."""
    out: list[tuple[str, JSON]] = []
    for dr in dicts(dosage.get("doseAndRate")):
        quantity = None
        if isinstance(dr.get("doseQuantity"), dict):
            quantity = dr["doseQuantity"]
        elif isinstance(dr.get("doseRange"), dict):
            quantity = as_dict(dr["doseRange"].get("high")) or None
        if quantity is None:
            continue
        kind = as_dict(dr.get("type"))
        label = next((as_str(c.get("code")) for c in codings(kind) if as_str(c.get("code"))),
                     None) or as_str(kind.get("text")) or "untyped"
        out.append((label, quantity))
    if out or dicts(dosage.get("doseAndRate")):
        return out
    for ext in dicts(dosage.get("extension")):
        ext_label = _DOSE_EXTENSIONS.get(str(ext.get("url")))
        if ext_label and isinstance(ext.get("valueQuantity"), dict):
            out.append((ext_label, ext["valueQuantity"]))
    return out


def worst_dose(entries: list[tuple[str, JSON]], to_mg: Callable[[JSON], Fraction | None]
               ) -> tuple[JSON | None, tuple[tuple[str, Fraction], ...]]:
    """(the dose the limits judge, the entries' differing mg amounts or ``()``).

    Every entry whose unit can be turned into mg is read; when they agree that is the dose,
    when they differ the dose limits judge the largest (the worst case) and the amounts are
    returned for ``order.dose-conflict``. An entry in a unit that cannot become mg (mg/kg: the
    weight is not read here) is left out. choice: entries in no convertible unit at all leave
    the first entry as the dose, so the line says why it cannot be read."""
    if not entries:
        return None, ()
    readable = []
    for label, quantity in entries:
        amount = to_mg(quantity)
        if amount is not None and amount > 0:
            readable.append((label, amount, quantity))
    if not readable:
        return entries[0][1], ()
    best = max(readable, key=lambda r: r[1])
    amounts = tuple((label, amount) for label, amount, _ in readable)
    conflict = amounts if len({a for _, a in amounts}) > 1 else ()
    return best[2], conflict


def _dose_quantity(dosage: JSON) -> tuple[JSON | None, JSON | None]:
    """(dose quantity, rate as a quantity or ratio) from the first doseAndRate that has them."""
    dose = rate = None
    for dr in dicts(dosage.get("doseAndRate")):
        if dose is None:
            if isinstance(dr.get("doseQuantity"), dict):
                dose = dr["doseQuantity"]
            elif isinstance(dr.get("doseRange"), dict):
                dose = as_dict(dr["doseRange"].get("high")) or None
        if rate is None:
            for key in ("rateQuantity", "rateRatio"):
                if isinstance(dr.get(key), dict):
                    rate = {key: dr[key]}
            if isinstance(dr.get("rateRange"), dict):
                rate = {"rateQuantity": as_dict(dr["rateRange"].get("high"))}
    return dose, rate


_PEOPLE_MASS = {"mg": "mg", "g": "g", "ug": "micrograms"}
_PEOPLE_PER = {"d": "day", "h": "hour", "min": "minute", "wk": "week"}
_COUNT_WORDS = {"tbl": "tablet", "tab": "tablet", "tabs": "tablet", "tablet": "tablet",
                "tablets": "tablet", "pill": "pill", "pills": "pill", "packet": "packet",
                "packets": "packet"}


def _written(q: JSON, table: UnitTable | None = None) -> str:
    """A quantity as people read it (clinical-rules section 10): the number without trailing
    zeros, "micrograms" for ug, count units as words ("2 tablets"), no UCUM braces."""
    number = as_number(q.get("value"))
    value = fmt(number, 6) if number is not None else str(q.get("value", "")).strip()
    unit = as_str(q.get("unit")) or as_str(q.get("code")) or ""
    if table is not None:
        unit = _people_unit(unit, number, table)
    return f"{value} {unit}".strip()


def _people_unit(unit: str, number: Fraction | None, table: UnitTable) -> str:
    head, sep, per = unit.partition("/")
    kind = table.kind(head)
    if kind is None:
        return unit
    if kind[0] == "mass":
        word = _PEOPLE_MASS[kind[1]]
    elif kind[0] == "volume":
        word = "mL"
    else:
        bare = head.strip().strip("{}").lower()
        word = _COUNT_WORDS.get(bare, bare)
        if word in {"tablet", "pill", "packet"} and number != 1:
            word += "s"
    if sep:
        return f"{word}/{_PEOPLE_PER.get(per.strip(), per.strip())}"
    return word


def _read_line(
    index: int,
    dosage: JSON,
    to_mg: Callable[[JSON], Fraction | None],
    table: UnitTable,
    strength: dict[str, Fraction],
    route: Route,
    kb: Knowledge,
    tz: Any,
) -> DoseLine:
    seq_raw = dosage.get("sequence")
    sequence = int(seq_raw) if isinstance(seq_raw, int) and not isinstance(seq_raw, bool) else None
    timing = as_dict(dosage.get("timing"))
    repeat = as_dict(timing.get("repeat"))
    prn = dosage.get("asNeededBoolean") is True or isinstance(
        dosage.get("asNeededCodeableConcept"), dict
    )
    bolus_label = any(
        w in _words(t)
        for t in concept_texts(timing.get("code")) + [as_str(dosage.get("text")) or ""]
        for w in ("bolus", "screening")
    )
    per_day, single, timing_problem = administrations_per_day(timing, kb)
    duration = duration_days(repeat, kb, tz)
    # clinical-rules section 1: every cap is a limit the prescriber set, so the smallest
    # applies; a cap over more than a day lowers nothing when a frequency is given.
    prn_max = prn_long = None
    for ratio in dicts(dosage.get("maxDosePerPeriod")):
        cap = _per_day_amount(ratio, to_mg, kb)
        if cap is None:
            continue
        if cap[1] <= 1:
            prn_max = cap[0] if prn_max is None else min(prn_max, cap[0])
        else:
            prn_long = cap[0] if prn_long is None else min(prn_long, cap[0])

    dose_q, rate = _dose_quantity(dosage)
    dose_q, conflict = worst_dose(dose_entries(dosage), to_mg) if (
        dose_q is None or len(dicts(dosage.get("doseAndRate"))) > 1) else (dose_q, ())
    base: dict[str, Any] = {
        "index": index, "sequence": sequence, "per_day": per_day, "single": single,
        "prn": prn, "prn_max_mg_day": prn_max, "prn_long_cap_mg_day": prn_long,
        "duration_days": duration, "bolus_label": bolus_label,
        "count_one": as_number(repeat.get("count")) == 1,
    }
    base["dose_conflict"] = conflict

    if dose_q is None and rate is not None:
        rate_mg_day = _rate_mg_day(rate, to_mg, kb)
        if rate_mg_day is None or rate_mg_day <= 0:
            return DoseLine(dose_mg=None, written="a rate that cannot be read", written_unit=None,
                            problem="the infusion rate cannot be read", **base)
        rq = as_dict(rate.get("rateQuantity")) or as_dict(
            as_dict(rate.get("rateRatio")).get("numerator"))
        unit = quantity_unit(rq, table) if rq else None
        if unit is None:
            unit = table.kind(re.split(r"/", as_str(rq.get("unit")) or as_str(rq.get("code"))
                                      or "x")[0])
        return DoseLine(dose_mg=None, written=_written(rq, table),
                        written_unit=unit[1] if unit else None, rate_mg_day=rate_mg_day,
                        **{**base, "single": False, "per_day": None})

    if dose_q is None:
        text = as_str(dosage.get("text"))
        why = "the dose is given only as free text" if text else "no dose quantity is given"
        return DoseLine(dose_mg=None, written=text or "no dose", written_unit=None,
                        problem=why, **base)

    written = _written(dose_q, table)
    value = as_number(dose_q.get("value"))
    unit = quantity_unit(dose_q, table)
    if value is None or value <= 0:
        return DoseLine(dose_mg=None, written=written, written_unit=unit[1] if unit else None,
                        problem="the dose value is missing, zero or negative", **base)
    if unit is None:
        # a dose written as an amount per time ("500 mcg/day", "20 mcg/hr") is a rate
        # (clinical-rules section 6)
        as_rate = _rate_mg_day({"rateQuantity": dose_q}, to_mg, kb)
        if as_rate is not None and as_rate > 0:
            rate_unit = table.kind(re.split(r"/", as_str(dose_q.get("unit"))
                                            or as_str(dose_q.get("code")) or "x")[0])
            return DoseLine(dose_mg=None, written=written,
                            written_unit=rate_unit[1] if rate_unit else None,
                            rate_mg_day=as_rate,
                            **{**base, "single": False, "per_day": None})
        return DoseLine(dose_mg=None, written=written, written_unit=None,
                        problem=f"the dose unit {written.split(' ', 1)[-1]!r} is not known",
                        **base)
    kind, canon = unit
    dose_mg = to_mg(dose_q)
    problem = problem_rule = None
    if dose_mg is None and kind == "volume":
        problem = "the dose is a volume and no concentration could be found"
        problem_rule = "units.liquid-volume" if route == "oral" else None
    elif dose_mg is None and kind == "count":
        problem = "the dose is a count of units and no strength per unit could be found"
    elif timing_problem and not prn:
        problem = timing_problem
    elif prn and per_day is None and prn_max is None and prn_long is None:
        problem = "as-needed with no frequency and no maximum per period"
        problem_rule = "order.prn-no-max"
    written_unit = canon if kind == "mass" else ("mL" if kind == "volume" else "count")
    if prn and timing_problem and per_day is None and prn_max is None and prn_long is None:
        problem, problem_rule = "as-needed with no frequency and no maximum per period", (
            "order.prn-no-max")
    return DoseLine(dose_mg=dose_mg, written=written, written_unit=written_unit,
                    problem=problem, problem_rule=problem_rule, **base)


def _rate_mg_day(rate: JSON, to_mg: Callable[[JSON], Fraction | None], kb: Knowledge
                 ) -> Fraction | None:
    if "rateRatio" in rate:
        ratio = as_dict(rate["rateRatio"])
        amount = to_mg(as_dict(ratio.get("numerator")))
        den = as_dict(ratio.get("denominator"))
        days = _period_days(den.get("value", 1), _period_word(
            as_str(den.get("code")) or as_str(den.get("unit")), kb), kb)
        return amount / days if amount is not None and days else None
    q = as_dict(rate.get("rateQuantity"))
    # the UCUM code, else the unit text ("mcg/hr", "microgram/hour": clinical-rules section 6)
    for unit_text in (as_str(q.get("code")), as_str(q.get("unit"))):
        if not unit_text or "/" not in unit_text:
            continue
        mass_unit, per = unit_text.split("/", 1)
        m = re.match(r"^(\d+(?:\.\d+)?)?\s*([a-z]+)$", per.strip().lower())
        if not m:
            continue
        per_value = Fraction(m.group(1)) if m.group(1) else Fraction(1)
        amount = to_mg({"value": q.get("value"), "unit": mass_unit.strip()})
        days = _period_days(per_value, _period_word(m.group(2), kb), kb)
        if amount is not None and days:
            return amount / days
    return None
