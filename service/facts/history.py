"""Baclofen history: regimens from MedicationRequests (every status but entered-in-error),
MedicationStatements and MedicationDispenses; the current regimen; new therapy; time on
therapy (clinical-rules section 2).

Public API (the titration, withdrawal and intrathecal rules read these):

- ``build_history(resources, checked, resolve, kb, check_time) -> MedicationHistory``:
  ``resources`` are ``(ref, resource)`` pairs (context plus the other orders of the call that
  are not drafts); the checked order is never part of its own history.
- ``MedicationHistory.current`` / ``.current_intrathecal`` / ``.new_therapy`` (facts.py).
- ``current_regimen(regimens, at, route, kb) -> Regimen | None``
- ``level_at(regimen, t) -> DoseLevel``: the daily dose in effect at ``t`` and when that dose
  level started (a plan's steps are followed through their durations).
- ``time_on_therapy(regimens, route, until, kb) -> TherapyTime | None``: continuous exposure up to
  ``until`` (the check time for a stop), gaps shorter than 14 days joined; None when there was
  no exposure; ``TherapyTime.start``/``days`` None when a joined regimen has no known start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from ..clinical.units import unit_table
from ..fhirjson import (
    JSON,
    as_dict,
    as_number,
    as_str,
    dicts,
    parse_datetime_range,
    parse_instant,
)
from ..fhirref import local, relative
from ..knowledge import Knowledge, frac
from ..model import (
    DoseLine,
    MedicationHistory,
    OrderFacts,
    Regimen,
    RegimenSource,
    Route,
    Step,
    TherapyTime,
)
from ..wording import fmt
from .drugs import Resolve, medication_of, names_baclofen, quantity_unit, strengths
from .orders import read_order

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


def gap_days(kb: Knowledge) -> Fraction:
    """14 days: a regimen ended within it is current; shorter gaps join (knowledge file)."""
    return frac(kb.data["history"]["gap_days"])


def _days(value: Fraction) -> timedelta:
    return timedelta(microseconds=int(value * 86_400_000_000))


def build_history(
    resources: Iterable[tuple[str, JSON]],
    checked: OrderFacts,
    resolve: Resolve,
    kb: Knowledge,
    check_time: datetime,
    read: ReadOrder | None = None,
    call_refs: frozenset[str] = frozenset(),
) -> MedicationHistory:
    """``read`` reads a MedicationRequest of ``resources`` as an unchecked order (default
    ``read_order``); the engine passes one that reads each order once per call.
    ``call_refs``: the orders of the call (a stopped one ends at the check time)."""
    resources = list(resources)
    ctx = _HistoryContext(resources, resolve, kb, check_time, call_refs)
    regimens: list[Regimen] = []
    for ref, r in resources:
        if ref == checked.ref:
            continue
        regimen = read_regimen(ref, r, checked, resolve, kb, check_time, read, ctx)
        if regimen is not None:
            regimens.append(regimen)
    at = checked.start
    return MedicationHistory(
        regimens=tuple(regimens),
        at=at,
        current=current_regimen(regimens, at, "oral", kb),
        current_intrathecal=current_regimen(regimens, at, "intrathecal", kb),
    )


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
            end = handed + _days(days) if days is not None else handed
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
    return start + _days(supply * (1 + max(repeats, Fraction(0))))


def read_regimen(ref: str, r: JSON, checked: OrderFacts, resolve: Resolve, kb: Knowledge,
                 check_time: datetime, read: ReadOrder | None = None,
                 hist: _HistoryContext | None = None) -> Regimen | None:
    """One baclofen regimen, or None (another drug, excluded status, unknown shape)."""
    hist = hist or _HistoryContext([(ref, r)], resolve, kb, check_time, frozenset())
    rtype = r.get("resourceType")
    if not isinstance(rtype, str) or rtype not in _EXCLUDED or as_str(
            r.get("status")) in _EXCLUDED[rtype]:
        return None
    if not names_baclofen(r, resolve, kb):
        return None  # another drug: its dose is not read
    tz = check_time.tzinfo
    status = as_str(r.get("status")) or "unknown"
    source: RegimenSource
    if rtype == "MedicationRequest":
        source = "MedicationRequest"
        order = (read(r, ref) if read is not None
                 else read_order(r, ref, resolve, kb, check_time))
        bounds_start = _bounds_start(r.get("dosageInstruction"), tz)
        if status == "cancelled" and (bounds_start is None or bounds_start >= checked.start):
            # clinical-rules section 1: a cancelled order counts only when something shows
            # the drug was taken; here, a start in the past (dispenses are read on their own).
            return None
        start = bounds_start or parse_instant(r.get("authoredOn"), tz)
        end, basis = order.end, "boundsPeriod.end"
    elif rtype == "MedicationStatement":
        source = "MedicationStatement"
        order = read_order(_as_request(r, r.get("dosage")), ref, resolve, kb, check_time)
        period = as_dict(r.get("effectivePeriod"))
        start = (parse_instant(r.get("effectiveDateTime"), tz)
                 or parse_instant(period.get("start"), tz)
                 or _bounds_start(r.get("dosage"), tz))
        end, basis = _end_of(period.get("end"), tz), "effectivePeriod.end"
        if end is None:
            end, basis = order.end, "boundsPeriod.end"
    else:
        source = "MedicationDispense"
        order = _dispense_order(ref, r, resolve, kb, check_time, hist)
        start = parse_instant(r.get("whenHandedOver"), tz)
        if start is None:
            return None  # choice: a dispense not handed over is not exposure
        supply = _supply_days(r, order, resolve, kb)
        if supply is not None:
            end, basis = start + _days(supply[0]), supply[1]
        else:
            # choice: with no days supply and no quantity that can be turned into days, the
            # dispense covers the day it was handed over.
            end, basis = start + timedelta(days=1), "whenHandedOver (no days supply)"
    if not order.is_baclofen:
        return None
    if end is None:
        basis = "open"
    if status in _ENDED_STATUSES and source != "MedicationDispense":
        last = parse_instant(as_dict(r.get("meta")).get("lastUpdated"), tz)
        in_call = ref in hist.call_refs or ref in checked.prior_refs
        if in_call:
            # clinical-rules section 2: a stopped order of the call (or the order the checked
            # one replaces) ends at the check time: it is the current regimen it replaces
            if end is None or end > check_time:
                end, basis = check_time, "stopped in this call"
        elif end is None and source == "MedicationRequest":
            # an ended order with no end ended at its latest sign of supply; with none, at
            # its start (it says nothing about use after it was written)
            end, basis = _last_supply(ref, r, start, last, kb, hist)
        elif end is None:
            end, basis = (last, "meta.lastUpdated") if last is not None else (
                start, "its start (no end and no sign of supply)")
        elif last is not None and last < end:
            end, basis = last, "meta.lastUpdated"
        before = checked.start - _JUST_BEFORE
        if not in_call and end is not None and end > before:
            end, basis = before, "just before the checked order"
    return Regimen(ref=ref, source=source, status=status, route=order.route, start=start,
                   end=end, end_basis=basis, order=order)


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


def _dispense_order(ref: str, r: JSON, resolve: Resolve, kb: Knowledge, check_time: datetime,
                    hist: _HistoryContext) -> OrderFacts:
    """A dispense's dosage: its own, else its authorising order's, else quantity x strength /
    daysSupply as one daily amount, else unknown (clinical-rules section 2)."""
    own = r.get("dosageInstruction")
    if dicts(own):
        return read_order(_as_request(r, own), ref, resolve, kb, check_time)
    for auth in dicts(r.get("authorizingPrescription")):
        target = hist.authorising(auth, r)
        if target is not None and dicts(target[1].get("dosageInstruction")):
            return read_order(_as_request(r, target[1].get("dosageInstruction")), ref, resolve,
                              kb, check_time)
    order = read_order(_as_request(r, None), ref, resolve, kb, check_time)
    days = _days_supply(r, kb)
    amount = _quantity_mg(r, resolve, kb)
    if days is None or amount is None:
        return order
    daily = amount / days
    line = DoseLine(index=0, sequence=None, dose_mg=daily,
                    written=f"{fmt(amount)} mg dispensed over {fmt(days)} days",
                    written_unit="mg", per_day=Fraction(1))
    return replace(order, steps=(Step(None, (line,)),))


def _quantity_mg(r: JSON, resolve: Resolve, kb: Knowledge) -> Fraction | None:
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
    concept, med = medication_of(r, resolve)
    per_unit = strengths(concept, med, table)
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


def _end_of(value: Any, tz: Any) -> datetime | None:
    """An end given as a date includes that whole day (as for boundsPeriod)."""
    r = parse_datetime_range(value, tz)
    if r is None:
        return None
    return r.high if r.precision != "instant" else r.low


def _supply_days(r: JSON, order: OrderFacts, resolve: Resolve, kb: Knowledge
                 ) -> tuple[Fraction, str] | None:
    """daysSupply, else the quantity dispensed over the daily dose."""
    days = _days_supply(r, kb)
    if days is not None:
        return days, "whenHandedOver + daysSupply"
    step = order.first_step
    daily = step.daily_mg if step else None
    mg = _quantity_mg(r, resolve, kb)
    if daily is None or daily <= 0 or mg is None:
        return None
    return mg / daily, "whenHandedOver + quantity / daily dose"


# --- questions about the history ------------------------------------------------------------

def current_regimen(regimens: Iterable[Regimen], at: datetime, route: Route, kb: Knowledge
                    ) -> Regimen | None:
    """The newest regimen of ``route`` active at ``at`` or ended within the 14 days before it.

    choice: "within the 14 days" includes an end exactly 14 days before. Regimens starting
    after ``at`` are not current. The newest is the latest start (unknown starts count as
    oldest); on a tie a regimen with a readable daily dose, then a MedicationRequest, wins.
    """
    window = _days(gap_days(kb))
    eligible = [
        r for r in regimens
        if r.route == route
        and (r.start is None or r.start <= at)
        and (r.end is None or r.end >= at - window)
    ]
    if not eligible:
        return None
    rank = {"MedicationRequest": 2, "MedicationStatement": 1, "MedicationDispense": 0}
    floor = datetime.min.replace(tzinfo=UTC)
    return max(eligible, key=lambda r: (r.start or floor, r.daily_mg is not None,
                                        rank[r.source], r.ref))


@dataclass(frozen=True)
class DoseLevel:
    daily_mg: Fraction | None
    since: datetime | None          # when this dose level started (None: unknown)
    step_index: int                 # 0-based step of the regimen's plan


def level_at(regimen: Regimen, t: datetime) -> DoseLevel:
    """The regimen's daily dose in effect at ``t`` and when that level started."""
    steps = regimen.order.steps
    if not steps:
        return DoseLevel(None, regimen.start, 0)
    since = regimen.start
    if len(steps) == 1 or since is None:
        return DoseLevel(steps[0].daily_mg, since, 0)
    for i, step in enumerate(steps):
        duration = step.duration_days
        if duration is None or i == len(steps) - 1:
            return DoseLevel(step.daily_mg, since, i)
        end = since + _days(duration)
        if t < end:
            return DoseLevel(step.daily_mg, since, i)
        since = end
    return DoseLevel(steps[-1].daily_mg, since, len(steps) - 1)  # pragma: no cover


def time_on_therapy(regimens: Iterable[Regimen], route: Route, until: datetime,
                    kb: Knowledge) -> TherapyTime | None:
    """Continuous exposure to ``route`` baclofen up to ``until``, joining gaps shorter than
    14 days. None when no regimen of that route is active at ``until`` or ended within the
    14 days before it."""
    gap = _days(gap_days(kb))
    spans = sorted(
        ((r.start, min(r.end, until) if r.end else until, r.ref)
         for r in regimens if r.route == route and (r.start is None or r.start <= until)),
        key=lambda s: (s[0] is not None, s[0] or until),
    )
    if not spans:
        return None
    if any(s[0] is None for s in spans):
        unknown = [s for s in spans if s[0] is None]
        ends = [s[1] for s in unknown]
        if max(ends) >= until - gap:
            return TherapyTime(None, None, tuple(s[2] for s in spans))
        spans = [s for s in spans if s[0] is not None]
        if not spans:
            return None
    # join from the newest exposure backwards
    known = sorted(spans, key=lambda s: s[0] or until)
    block_start: datetime | None = None
    block_end: datetime | None = None
    refs: list[str] = []
    for start, end, ref in known:
        assert start is not None
        if block_end is None or start - block_end >= gap:
            block_start, block_end, refs = start, end, [ref]
        else:
            block_end = max(block_end, end)
            refs.append(ref)
    assert block_start is not None and block_end is not None
    if block_end < until - gap:
        return None
    micro = until - block_start
    days = Fraction((micro.days * 86400 + micro.seconds) * 1_000_000 + micro.microseconds,
                    86_400_000_000)
    return TherapyTime(block_start, days, tuple(refs))


def same_dose_since(regimens: Iterable[Regimen], current: Regimen, at: datetime,
                    kb: Knowledge) -> datetime | None:
    """When the patient started the daily dose that ``current`` gives at ``at``.

    A refill or a renewal at the same daily dose does not restart the clock: regimens of the
    same route and the same daily dose that join ``current`` (overlapping, or gaps shorter
    than 14 days) are followed back to the earliest start. None when a start is unknown.
    choice: this is the start the titration interval is measured from.
    """
    level = level_at(current, at)
    if level.since is None or level.step_index > 0 or level.daily_mg is None:
        return level.since
    gap = _days(gap_days(kb))
    same = [r for r in regimens
            if r.route == current.route and r.ref != current.ref and r.start is not None
            and r.start <= level.since and len(r.order.steps) == 1
            and r.daily_mg == level.daily_mg]
    since = level.since
    changed = True
    while changed:
        changed = False
        for r in same:
            assert r.start is not None
            if r.start < since and (r.end is None or r.end >= since - gap):
                since, changed = r.start, True
    return since
