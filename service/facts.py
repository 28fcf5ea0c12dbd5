"""Typed, unit-carrying facts the rules read. Rules never see FHIR JSON.

Units live in the names: ``dose_mg``, ``per_day``, ``daily_mg``, ``duration_days``. Numbers
are exact ``Fraction`` values; rounding happens only when text is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Literal

Route = Literal["oral", "intrathecal"]
UnitKind = Literal["mass", "volume", "count"]


@dataclass(frozen=True)
class DoseLine:
    """One dosage instruction line, read."""

    index: int
    sequence: int | None
    dose_mg: Fraction | None          # per administration, in mg (None: could not be read)
    written: str                      # the dose as written, for details ("2 tablets")
    written_unit: str | None          # normalised unit written: mg, g, ug, mL, count, or None
    per_day: Fraction | None          # administrations per day (worst case); None if unknown
    single: bool = False              # a single dose (repeat.count 1, no frequency)
    prn: bool = False
    prn_max_mg_day: Fraction | None = None   # maxDosePerPeriod turned into mg per day
    rate_mg_day: Fraction | None = None      # a continuous rate turned into mg per day
    duration_days: Fraction | None = None    # boundsDuration / boundsPeriod length
    bolus_label: bool = False
    problem: str | None = None        # why the dose or schedule could not be read
    problem_rule: str | None = None   # the specific rule that covers the problem, if any

    @property
    def scheduled(self) -> bool:
        return not self.prn and not self.single

    @property
    def daily_mg(self) -> Fraction | None:
        """Daily amount of this line (as-needed: the worst case)."""
        if self.rate_mg_day is not None:
            return self.rate_mg_day
        if self.dose_mg is None:
            return None
        if self.single:
            return self.dose_mg
        by_frequency = self.dose_mg * self.per_day if self.per_day is not None else None
        if self.prn:
            options = [v for v in (by_frequency, self.prn_max_mg_day) if v is not None]
            return max(options) if options else None
        return by_frequency


@dataclass(frozen=True)
class Step:
    """Lines that apply together (same or no ``sequence``): they add up."""

    sequence: int | None
    lines: tuple[DoseLine, ...]

    @property
    def daily_mg(self) -> Fraction | None:
        """The step's daily dose, or None when any line's daily amount is unknown."""
        values = [line.daily_mg for line in self.lines]
        if any(v is None for v in values):
            return None
        return sum((v for v in values if v is not None), Fraction(0))

    @property
    def known_daily_mg(self) -> Fraction:
        """Lower bound: the sum of the lines that could be read."""
        return sum((v for v in (ln.daily_mg for ln in self.lines) if v is not None), Fraction(0))

    @property
    def complete(self) -> bool:
        return all(line.daily_mg is not None for line in self.lines)

    @property
    def max_single_mg(self) -> Fraction | None:
        doses = [ln.dose_mg for ln in self.lines if ln.dose_mg is not None]
        return max(doses) if doses else None

    @property
    def scheduled_per_day(self) -> Fraction | None:
        values = [ln.per_day for ln in self.lines if ln.scheduled]
        if not values or any(v is None for v in values):
            return None
        return sum((v for v in values if v is not None), Fraction(0))

    @property
    def scheduled_daily_mg(self) -> Fraction | None:
        values = [ln.daily_mg for ln in self.lines if ln.scheduled]
        if not values or any(v is None for v in values):
            return None
        return sum((v for v in values if v is not None), Fraction(0))

    @property
    def duration_days(self) -> Fraction | None:
        durations = [ln.duration_days for ln in self.lines if ln.duration_days is not None]
        return max(durations) if durations else None


@dataclass(frozen=True)
class OrderFacts:
    """A MedicationRequest, read."""

    ref: str                          # reference used in output (Type/id or urn:uuid)
    status: str
    is_baclofen: bool
    route: Route
    name: str                         # product as written, for details
    steps: tuple[Step, ...]
    start: datetime
    end: datetime | None
    prior_refs: frozenset[str] = frozenset()
    dose_key: str = ""                # canonical dosage text, for the per-finding identifier
    ingredient_names: tuple[str, ...] = ()   # lower-case names, for interaction matching
    checked: bool = False             # an order of this call (not context)

    @property
    def lines(self) -> tuple[DoseLine, ...]:
        return tuple(line for step in self.steps for line in step.lines)

    @property
    def first_step(self) -> Step | None:
        return self.steps[0] if self.steps else None

    @property
    def is_plan(self) -> bool:
        return len(self.steps) > 1


@dataclass(frozen=True)
class AgeFacts:
    """Age in years at the start of the order, as a range when the birth date is partial."""

    low_years: Fraction
    high_years: Fraction
    partial: bool

    def exact(self) -> Fraction | None:
        return None if self.partial else self.low_years


@dataclass(frozen=True)
class PatientFacts:
    ref: str
    age: AgeFacts | None = None
    sex: str | None = None            # male, female, other, unknown, or None
    weight_kg: Fraction | None = None
    weight_ref: str | None = None
    height_cm: Fraction | None = None
    extra: dict[str, object] = field(default_factory=dict)
