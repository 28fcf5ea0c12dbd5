"""Questions about baclofen regimens (clinical-rules section 2): the current regimen, the dose
level in effect at a time, continuous time on therapy, when the present dose started. Pure
queries over the Regimen facts (service/model.py); the 14-day gap is the knowledge file's
``history.gap_days``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from ..knowledge import Knowledge
from ..model import Regimen, Route, TherapyTime


def gap_days(kb: Knowledge) -> Fraction:
    """``history.gap_days``: a regimen ended within it is current; shorter gaps join."""
    return kb.typed.history.gap_days


def days_delta(value: Fraction) -> timedelta:
    return timedelta(microseconds=int(value * 86_400_000_000))


def current_regimen(regimens: Iterable[Regimen], at: datetime, route: Route, kb: Knowledge
                    ) -> Regimen | None:
    """The newest regimen of ``route`` active at ``at`` or ended within ``gap_days`` before it.

    choice: "within" includes an end exactly ``gap_days`` before. Regimens starting
    after ``at`` are not current. The newest is the latest start (unknown starts count as
    oldest); on a tie a regimen with a readable daily dose, then a MedicationRequest, wins.
    """
    window = days_delta(gap_days(kb))
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
        end = since + days_delta(duration)
        if t < end:
            return DoseLevel(step.daily_mg, since, i)
        since = end
    return DoseLevel(steps[-1].daily_mg, since, len(steps) - 1)  # pragma: no cover


def time_on_therapy(regimens: Iterable[Regimen], route: Route, until: datetime,
                    kb: Knowledge) -> TherapyTime | None:
    """Continuous exposure to ``route`` baclofen up to ``until``, joining gaps shorter than
    ``gap_days``. None when no regimen of that route is active at ``until`` or ended within
    ``gap_days`` before it."""
    gap = days_delta(gap_days(kb))
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
    than ``gap_days``) are followed back to the earliest start. None when a start is unknown.
    choice: this is the start the titration interval is measured from.
    """
    level = level_at(current, at)
    if level.since is None or level.step_index > 0 or level.daily_mg is None:
        return level.since
    gap = days_delta(gap_days(kb))
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
