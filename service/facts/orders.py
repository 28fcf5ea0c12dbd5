"""One MedicationRequest's dosage read: mg per dose, administrations per day, schedule steps
(clinical-rules section 1).

Pure functions over normalised MedicationRequest JSON. Nothing here raises on odd input: a dose
or schedule that cannot be read becomes a ``problem`` on its line, which the rules turn into an
explicit finding. A statement or a dispense is read by the same code, shaped like an order
(service/facts/history.py).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from fractions import Fraction
from typing import Any

from ..clinical.units import UnitTable, unit_table
from ..fhirjson import (
    JSON,
    as_dict,
    as_number,
    as_str,
    codings,
    concept_texts,
    dicts,
    parse_instant,
)
from ..fhirref import local, relative
from ..knowledge import Knowledge
from ..model import DoseLine, OrderFacts, Route, Step
from ..wording import fmt, unit_for_people
from .drugs import Drug, Resolve, identify, quantity_unit, route_of, strengths, words
from .timing import (
    ToMg,
    administrations_per_day,
    bounds_end,
    duration_days,
    per_day_amount,
    rate_mg_day,
)


def read_order(
    order: JSON,
    ref: str,
    resolve: Resolve,
    kb: Knowledge,
    check_time: datetime,
    checked: bool = False,
    drug: Drug | None = None,
) -> OrderFacts:
    """The order read. ``drug``: its medicine when already identified (``Identified``; a
    statement or dispense shaped like an order names the same medicine)."""
    tz = check_time.tzinfo
    table = unit_table(kb)
    drug = drug or identify(order, resolve, kb)
    concept, med, baclofen = drug.concept, drug.med, drug.baclofen
    names = list(drug.names)
    route = route_of(order, concept, med, kb, names)
    strength = strengths(concept, med, table, names)

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
        e = bounds_end(bp.get("end"), tz)
        if e is not None:
            ends.append(e)
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


def worst_dose(entries: list[tuple[str, JSON]], to_mg: ToMg
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


def _written(q: JSON, table: UnitTable | None = None) -> str:
    """A quantity as people read it (clinical-rules section 10): the number without trailing
    zeros, "micrograms" for ug, count units as words ("2 tablets"), no UCUM braces."""
    number = as_number(q.get("value"))
    value = fmt(number, 6) if number is not None else str(q.get("value", "")).strip()
    unit = as_str(q.get("unit")) or as_str(q.get("code")) or ""
    if table is not None:
        unit = unit_for_people(unit, table.kind(unit.partition("/")[0]), number)
    return f"{value} {unit}".strip()


def _read_line(
    index: int,
    dosage: JSON,
    to_mg: ToMg,
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
    bolus_words = set(kb.typed.recognition.bolus_words)
    bolus_label = any(
        bolus_words & words(t)
        for t in concept_texts(timing.get("code")) + [as_str(dosage.get("text")) or ""]
    )
    per_day, single, timing_problem = administrations_per_day(timing, kb)
    duration = duration_days(repeat, kb, tz)
    # clinical-rules section 1: every cap is a limit the prescriber set, so the smallest
    # applies; a cap over more than a day lowers nothing when a frequency is given.
    prn_max = prn_long = None
    for ratio in dicts(dosage.get("maxDosePerPeriod")):
        cap = per_day_amount(ratio, to_mg, kb)
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
        rate_daily = rate_mg_day(rate, to_mg, kb)
        if rate_daily is None or rate_daily <= 0:
            return DoseLine(dose_mg=None, written="a rate that cannot be read", written_unit=None,
                            problem="the infusion rate cannot be read", **base)
        rq = as_dict(rate.get("rateQuantity")) or as_dict(
            as_dict(rate.get("rateRatio")).get("numerator"))
        unit = quantity_unit(rq, table) if rq else None
        if unit is None:
            unit = table.kind(re.split(r"/", as_str(rq.get("unit")) or as_str(rq.get("code"))
                                      or "x")[0])
        return DoseLine(dose_mg=None, written=_written(rq, table),
                        written_unit=unit[1] if unit else None, rate_mg_day=rate_daily,
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
        as_rate = rate_mg_day({"rateQuantity": dose_q}, to_mg, kb)
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


