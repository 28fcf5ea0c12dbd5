"""Baclofen history: regimens from MedicationRequests (every status but entered-in-error),
MedicationStatements and MedicationDispenses (clinical-rules section 2).

- ``HistorySource(resources, resolve, kb, check_time, ...)``: the history resources of one call
  (``(ref, resource)`` pairs: the context plus the orders of the call that are not drafts),
  each read once: its medicine, its dosage, its start and end as far as they do not depend on
  the checked order.
- ``HistorySource.for_order(checked) -> MedicationHistory``: the history relative to one
  checked order (never part of its own history): a cancelled order that started before it, an
  ended order that ends just before it, the order it replaces.
- ``build_history(resources, checked, ...)``: both in one call.

The questions asked of a history (current regimen, dose level, time on therapy) are pure
queries in service/clinical/therapy.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from ..clinical.therapy import current_regimen, days_delta
from ..clinical.units import unit_table
from ..fhirjson import JSON, as_dict, as_number, as_str, dicts, parse_instant
from ..fhirref import local, relative
from ..knowledge import Knowledge
from ..model import DoseLine, MedicationHistory, OrderFacts, Regimen, RegimenSource, Step
from ..wording import fmt
from .drugs import Drug, Identified, Resolve, quantity_unit, strengths
from .orders import read_order
from .timing import bounds_end

ReadOrder = Callable[[dict[str, Any], str], OrderFacts]

_EXCLUDED = {
    "MedicationRequest": {"entered-in-error"},
    # choice: a statement that the drug was not taken, and dispenses that never reached the
    # patient, are not exposure.
    "MedicationStatement": {"entered-in-error", "not-taken"},
    "MedicationDispense": {"entered-in-error", "cancelled", "declined", "preparation"},
}
_ENDED_STATUSES = {"stopped", "completed", "cancelled"}
_JUST_BEFORE = timedelta(microseconds=1)


def build_history(
    resources: Iterable[tuple[str, JSON]],
    checked: OrderFacts,
    resolve: Resolve,
    kb: Knowledge,
    check_time: datetime,
    read: ReadOrder | None = None,
    call_refs: frozenset[str] = frozenset(),
) -> MedicationHistory:
    """The history of one checked order (``HistorySource`` for one order)."""
    return HistorySource(resources, resolve, kb, check_time, read, call_refs).for_order(checked)


@dataclass(frozen=True)
class _Read:
    """A baclofen regimen as read once per call: all that does not depend on the checked
    order."""

    ref: str
    source: RegimenSource
    status: str
    order: OrderFacts
    start: datetime | None
    end: datetime | None
    basis: str
    bounds_start: datetime | None        # a MedicationRequest's earliest boundsPeriod.start
    ended: bool                          # stopped, completed or cancelled (not a dispense)
    last: datetime | None                # meta.lastUpdated
    last_supply: tuple[datetime | None, str] | None  # an ended request's end without one


class HistorySource:
    """The history resources of one call, each read once (``for_order`` per checked order).

    ``read`` reads a MedicationRequest as an unchecked order (default ``read_order``; the
    facts stage passes the reader it also uses for the other orders); ``call_refs``: the
    orders of the call (a stopped one ends at the check time); ``identified``: the call's
    medicine identification."""

    def __init__(self, resources: Iterable[tuple[str, JSON]], resolve: Resolve, kb: Knowledge,
                 check_time: datetime, read: ReadOrder | None = None,
                 call_refs: frozenset[str] = frozenset(),
                 identified: Identified | None = None):
        self.resources = list(resources)
        self.kb = kb
        self.check_time = check_time
        self.call_refs = call_refs
        self.identified = identified or Identified(resolve, kb)
        self._read = read
        self._hist = _HistoryContext(self.resources, resolve, kb, check_time, call_refs)
        self._bases: dict[int, _Read | None] = {}

    def for_order(self, checked: OrderFacts) -> MedicationHistory:
        regimens: list[Regimen] = []
        for i, (ref, _r) in enumerate(self.resources):
            if ref == checked.ref:
                continue
            if i not in self._bases:
                self._bases[i] = self._base(*self.resources[i])
            base = self._bases[i]
            regimen = _relative(base, checked, self.call_refs, self.check_time) if base else None
            if regimen is not None:
                regimens.append(regimen)
        at = checked.start
        return MedicationHistory(
            regimens=tuple(regimens),
            at=at,
            current=current_regimen(regimens, at, "oral", self.kb),
            current_intrathecal=current_regimen(regimens, at, "intrathecal", self.kb),
        )

    def _base(self, ref: str, r: JSON) -> _Read | None:
        """One baclofen regimen, or None (another drug, excluded status, unknown shape)."""
        kb, check_time, hist = self.kb, self.check_time, self._hist
        rtype = r.get("resourceType")
        if not isinstance(rtype, str) or rtype not in _EXCLUDED or as_str(
                r.get("status")) in _EXCLUDED[rtype]:
            return None
        drug = self.identified(r)
        if not drug.baclofen:
            return None  # another drug: its dose is not read
        resolve = self.identified.resolve
        tz = check_time.tzinfo
        status = as_str(r.get("status")) or "unknown"
        source: RegimenSource
        bounds_start = None
        if rtype == "MedicationRequest":
            source = "MedicationRequest"
            order = (self._read(r, ref) if self._read is not None
                     else read_order(r, ref, resolve, kb, check_time, drug=drug))
            bounds_start = _bounds_start(r.get("dosageInstruction"), tz)
            start = bounds_start or parse_instant(r.get("authoredOn"), tz)
            end, basis = order.end, "boundsPeriod.end"
        elif rtype == "MedicationStatement":
            source = "MedicationStatement"
            order = read_order(_as_request(r, r.get("dosage")), ref, resolve, kb, check_time,
                               drug=drug)
            period = as_dict(r.get("effectivePeriod"))
            start = (parse_instant(r.get("effectiveDateTime"), tz)
                     or parse_instant(period.get("start"), tz)
                     or _bounds_start(r.get("dosage"), tz))
            end, basis = bounds_end(period.get("end"), tz), "effectivePeriod.end"
            if end is None:
                end, basis = order.end, "boundsPeriod.end"
        else:
            source = "MedicationDispense"
            order = _dispense_order(ref, r, drug, resolve, kb, check_time, hist)
            start = parse_instant(r.get("whenHandedOver"), tz)
            if start is None:
                return None  # choice: a dispense not handed over is not exposure
            supply = _supply_days(r, order, drug, kb)
            if supply is not None:
                end, basis = start + days_delta(supply[0]), supply[1]
            else:
                # choice: with no days supply and no quantity that can be turned into days,
                # the dispense covers the day it was handed over.
                end, basis = start + timedelta(days=1), "whenHandedOver (no days supply)"
        if not order.is_baclofen:
            return None
        if end is None:
            basis = "open"
        ended = status in _ENDED_STATUSES and source != "MedicationDispense"
        last = parse_instant(as_dict(r.get("meta")).get("lastUpdated"), tz) if ended else None
        last_supply = (_last_supply(ref, r, start, last, kb, hist)
                       if ended and end is None and source == "MedicationRequest" else None)
        return _Read(ref, source, status, order, start, end, basis, bounds_start, ended, last,
                     last_supply)


def _relative(b: _Read, checked: OrderFacts, call_refs: frozenset[str], check_time: datetime
              ) -> Regimen | None:
    """The regimen ``b`` in the history of ``checked``."""
    if b.source == "MedicationRequest" and b.status == "cancelled" and (
            b.bounds_start is None or b.bounds_start >= checked.start):
        # clinical-rules section 1: a cancelled order counts only when something shows the
        # drug was taken; here, a start in the past (dispenses are read on their own).
        return None
    end, basis = b.end, b.basis
    if b.ended:
        last = b.last
        in_call = b.ref in call_refs or b.ref in checked.prior_refs
        if in_call:
            # clinical-rules section 2: a stopped order of the call (or the order the checked
            # one replaces) ends at the check time: it is the current regimen it replaces
            if end is None or end > check_time:
                end, basis = check_time, "stopped in this call"
        elif end is None and b.last_supply is not None:
            # an ended order with no end ended at its latest sign of supply; with none, at
            # its start (it says nothing about use after it was written)
            end, basis = b.last_supply
        elif end is None:
            end, basis = (last, "meta.lastUpdated") if last is not None else (
                b.start, "its start (no end and no sign of supply)")
        elif last is not None and last < end:
            end, basis = last, "meta.lastUpdated"
        before = checked.start - _JUST_BEFORE
        if not in_call and end is not None and end > before:
            end, basis = before, "just before the checked order"
    return Regimen(ref=b.ref, source=b.source, status=b.status, route=b.order.route,
                   start=b.start, end=end, end_basis=basis, order=b.order)


class _HistoryContext:
    """What one regimen's reading needs from the rest of the history: the orders by
    reference (a dispense's authorising order) and the end of the dispenses each order
    authorised (the last sign of supply of a stopped or completed order, section 2)."""

    def __init__(self, resources: list[tuple[str, JSON]], resolve: Resolve, kb: Knowledge,
                 check_time: datetime, call_refs: frozenset[str]):
        self.resolve = resolve
        self.call_refs = call_refs
        self.requests: dict[str, JSON] = {}
        for ref, r in resources:
            if r.get("resourceType") == "MedicationRequest":
                self.requests[ref] = r
                if as_str(r.get("id")):
                    self.requests.setdefault(f"MedicationRequest/{r['id']}", r)
        self.supply_end: dict[str, datetime] = {}
        tz = check_time.tzinfo
        for _ref, r in resources:
            if r.get("resourceType") != "MedicationDispense" or as_str(
                    r.get("status")) in _EXCLUDED["MedicationDispense"]:
                continue
            handed = parse_instant(r.get("whenHandedOver"), tz)
            days = _days_supply(r, kb)
            if handed is None:
                continue
            end = handed + days_delta(days) if days is not None else handed
            for auth in dicts(r.get("authorizingPrescription")):
                target = self.authorising(auth, r)
                if target is None:
                    continue
                key = target[0]
                if key not in self.supply_end or self.supply_end[key] < end:
                    self.supply_end[key] = end

    def authorising(self, reference: JSON, within: JSON) -> tuple[str, JSON] | None:
        """(the order's reference key, the order) of an authorizingPrescription."""
        text = as_str(reference.get("reference"))
        keys = [text] if text else []
        tail = relative(text) if text and not local(text) else None
        if tail is not None:
            keys.append(tail)
        for key in keys:
            if key in self.requests:
                return key, self.requests[key]
        target = self.resolve(reference, within)
        if target is not None and target.get("resourceType") == "MedicationRequest":
            return f"MedicationRequest/{target.get('id')}", target
        return None

    def supply_end_of(self, ref: str, r: JSON) -> datetime | None:
        for key in (ref, f"MedicationRequest/{r.get('id')}"):
            if key in self.supply_end:
                return self.supply_end[key]
        return None


def _days_supply(r: JSON, kb: Knowledge) -> Fraction | None:
    ds = as_dict(r.get("daysSupply"))
    value = as_number(ds.get("value"))
    unit = as_str(ds.get("code")) or as_str(ds.get("unit")) or "d"
    unit = {"day": "d", "days": "d", "week": "wk", "weeks": "wk"}.get(unit, unit)
    if value is not None and value > 0 and unit in kb.period_unit_days:
        return value * kb.period_unit_days[unit]
    return None


def _expected_supply_end(r: JSON, start: datetime | None, kb: Knowledge) -> datetime | None:
    """start + expectedSupplyDuration x (1 + numberOfRepeatsAllowed)."""
    if start is None:
        return None
    request = as_dict(r.get("dispenseRequest"))
    supply = _days_supply({"daysSupply": request.get("expectedSupplyDuration")}, kb) if (
        isinstance(request.get("expectedSupplyDuration"), dict)) else None
    if supply is None:
        return None
    repeats = as_number(request.get("numberOfRepeatsAllowed")) or Fraction(0)
    return start + days_delta(supply * (1 + max(repeats, Fraction(0))))


def _last_supply(ref: str, r: JSON, start: datetime | None, last: datetime | None,
                 kb: Knowledge, hist: _HistoryContext) -> tuple[datetime | None, str]:
    """The end of a stopped or completed order without one (clinical-rules section 2): the
    end of the dispenses it authorised, else start + expectedSupplyDuration x (1 + repeats),
    else meta.lastUpdated, else its start."""
    dispensed = hist.supply_end_of(ref, r)
    if dispensed is not None:
        return dispensed, "the end of the dispenses it authorised"
    expected = _expected_supply_end(r, start, kb)
    if expected is not None:
        return expected, "start + expectedSupplyDuration x (1 + repeats)"
    if last is not None:
        return last, "meta.lastUpdated"
    return start, "its start (no end and no sign of supply)"


def _dispense_order(ref: str, r: JSON, drug: Drug, resolve: Resolve, kb: Knowledge,
                    check_time: datetime, hist: _HistoryContext) -> OrderFacts:
    """A dispense's dosage: its own, else its authorising order's, else quantity x strength /
    daysSupply as one daily amount, else unknown (clinical-rules section 2)."""
    own = r.get("dosageInstruction")
    if dicts(own):
        return read_order(_as_request(r, own), ref, resolve, kb, check_time, drug=drug)
    for auth in dicts(r.get("authorizingPrescription")):
        target = hist.authorising(auth, r)
        if target is not None and dicts(target[1].get("dosageInstruction")):
            return read_order(_as_request(r, target[1].get("dosageInstruction")), ref, resolve,
                              kb, check_time, drug=drug)
    order = read_order(_as_request(r, None), ref, resolve, kb, check_time, drug=drug)
    days = _days_supply(r, kb)
    amount = _quantity_mg(r, drug, kb)
    if days is None or amount is None:
        return order
    daily = amount / days
    line = DoseLine(index=0, sequence=None, dose_mg=daily,
                    written=f"{fmt(amount)} mg dispensed over {fmt(days)} days",
                    written_unit="mg", per_day=Fraction(1))
    return replace(order, steps=(Step(None, (line,)),))


def _quantity_mg(r: JSON, drug: Drug, kb: Knowledge) -> Fraction | None:
    """The quantity dispensed in mg (a mass, or a count or volume through the strength)."""
    q = as_dict(r.get("quantity"))
    amount = as_number(q.get("value"))
    if amount is None or amount <= 0:
        return None
    table = unit_table(kb)
    kind = quantity_unit(q, table)
    if kind is None:
        return None
    if kind[0] == "mass":
        return amount * table.mass_factor[kind[1]]
    per_unit = strengths(drug.concept, drug.med, table, drug.names)
    return amount * per_unit[kind[0]] if kind[0] in per_unit else None


def _as_request(r: JSON, dosage: Any) -> JSON:
    """A statement or dispense shaped like a MedicationRequest, so that its dosage is read by
    the same code as an order."""
    out: JSON = {"resourceType": "MedicationRequest", "status": r.get("status", "unknown"),
                 "dosageInstruction": dosage if isinstance(dosage, list) else dicts(dosage)}
    for key in ("medicationCodeableConcept", "medicationReference", "contained"):
        if key in r:
            out[key] = r[key]
    return out


def _bounds_start(dosages: Any, tz: Any) -> datetime | None:
    starts = [parse_instant(as_dict(as_dict(as_dict(d.get("timing")).get("repeat"))
                                    .get("boundsPeriod")).get("start"), tz)
              for d in dicts(dosages)]
    known = [s for s in starts if s is not None]
    return min(known) if known else None


def _supply_days(r: JSON, order: OrderFacts, drug: Drug, kb: Knowledge
                 ) -> tuple[Fraction, str] | None:
    """daysSupply, else the quantity dispensed over the daily dose."""
    days = _days_supply(r, kb)
    if days is not None:
        return days, "whenHandedOver + daysSupply"
    step = order.first_step
    daily = step.daily_mg if step else None
    mg = _quantity_mg(r, drug, kb)
    if daily is None or daily <= 0 or mg is None:
        return None
    return mg / daily, "whenHandedOver + quantity / daily dose"
