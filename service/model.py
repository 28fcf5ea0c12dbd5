"""Typed, unit-carrying facts the rules read (built by service/facts/). Rules never see FHIR
JSON. The bottom layer, beside findings.py: it imports nothing of the service but errors.py.

Units live in the names: ``dose_mg``, ``per_day``, ``daily_mg``, ``duration_days``. Numbers
are exact ``Fraction`` values; rounding happens only when text is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from functools import cached_property
from typing import Literal

from .errors import Problem

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
    prn_max_mg_day: Fraction | None = None   # maxDosePerPeriod over a day or less, per 24 h
    prn_long_cap_mg_day: Fraction | None = None  # maxDosePerPeriod over a longer period, per day
    rate_mg_day: Fraction | None = None      # a continuous rate turned into mg per day
    duration_days: Fraction | None = None    # boundsDuration / boundsPeriod length
    bolus_label: bool = False
    count_one: bool = False           # timing.repeat.count 1 (an intrathecal bolus, section 6)
    problem: str | None = None        # why the dose or schedule could not be read
    problem_rule: str | None = None   # the specific rule that covers the problem, if any
    # the line's own dose entries (typed doseAndRate, dose extensions) that give different mg
    # amounts: (type, mg) each; dose_mg is the largest (order.dose-conflict)
    dose_conflict: tuple[tuple[str, Fraction], ...] = ()

    @property
    def scheduled(self) -> bool:
        return not self.prn and not self.single

    @cached_property  # read by many rules: made once (the line is immutable)
    def daily_mg(self) -> Fraction | None:
        """Daily amount of this line. As-needed: the most the order allows (clinical-rules
        section 1), the smaller of dose x maximum frequency and a cap over a day or less; a
        cap over a longer period counts (as its amount per day) only without a frequency."""
        if self.rate_mg_day is not None:
            return self.rate_mg_day
        if self.dose_mg is None:
            return None
        if self.single:
            return self.dose_mg
        by_frequency = self.dose_mg * self.per_day if self.per_day is not None else None
        if self.prn:
            options = [v for v in (by_frequency, self.prn_max_mg_day) if v is not None]
            if options:
                return min(options)
            return self.prn_long_cap_mg_day
        return by_frequency


@dataclass(frozen=True)
class Step:
    """Lines that apply together (same or no ``sequence``): they add up."""

    sequence: int | None
    lines: tuple[DoseLine, ...]

    @cached_property
    def daily_mg(self) -> Fraction | None:
        """The step's daily dose, or None when any line's daily amount is unknown."""
        values = [line.daily_mg for line in self.lines]
        if any(v is None for v in values):
            return None
        return sum((v for v in values if v is not None), Fraction(0))

    @cached_property
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
    drug_unknown: bool = False        # no code, name or resolvable Medication says what it is

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
    weight_at: datetime | None = None      # time of the weight result used
    height_ref: str | None = None
    height_at: datetime | None = None
    pregnancy_refs: tuple[str, ...] = ()   # Observations/Conditions showing a pregnancy
    breastfeeding_refs: tuple[str, ...] = ()   # Conditions/Observations showing breastfeeding
    alcohol_refs: tuple[str, ...] = ()   # Conditions showing alcohol use disorder


# --- kidney function (clinical-rules sections 2 and 5) --------------------------------------

RenalSource = Literal["egfr", "crcl", "cockcroft-gault", "ckd-epi-2021", "bedside-schwartz",
                      "ckd-stage"]
EGFR_SOURCES = frozenset({"egfr", "ckd-epi-2021", "bedside-schwartz"})
RenalBand = Literal["normal", "mild", "moderate", "severe", "esrd"]
BAND_ORDER: tuple[RenalBand, ...] = ("esrd", "severe", "moderate", "mild", "normal")
"""Most restrictive first."""


@dataclass(frozen=True)
class RenalCandidate:
    """One kidney-function value in mL/min: a reported eGFR or CrCl, or a computed CrCl."""

    source: RenalSource
    value_ml_min: Fraction         # as counted (a "<X" result is just under X)
    rounded_ml_min: Fraction       # rounded to patient_context.renal.round_to; compared
    band: RenalBand
    at: datetime                   # result time (the creatinine's for Cockcroft-Gault)
    stale: bool                    # older than the stale limit at the check time
    refs: tuple[str, ...]          # every Observation used (result, weight, height)
    text: str                      # the arithmetic, for details
    bound: str | None = None       # ">" or "<" when the result was bounded


@dataclass(frozen=True)
class ConditionEvidence:
    """A Condition, Procedure or value that shows a kidney state."""

    ref: str | None                # None for a renal value below 15 (its refs are the value's)
    text: str


@dataclass(frozen=True)
class RenalFacts:
    value: RenalCandidate | None                 # *the* renal value, or None
    dialysis: tuple[ConditionEvidence, ...] = ()  # dialysis/ESRD Conditions and Procedures
    ckd: tuple[ConditionEvidence, ...] = ()       # chronic kidney disease Conditions
    candidates: tuple[RenalCandidate, ...] = ()
    notes: tuple[str, ...] = ()                  # results not used, and why
    egfr_only: bool = False                      # under 18: reported eGFR or bedside Schwartz
    unusable_creatinine: tuple[str, ...] = ()    # creatinines from which no value was made
    transplant: tuple[ConditionEvidence, ...] = ()   # kidney transplant evidence
    superseded: tuple[ConditionEvidence, ...] = ()   # ESRD evidence the transplant set aside

    @property
    def rounded(self) -> Fraction | None:
        return self.value.rounded_ml_min if self.value else None

    @property
    def esrd(self) -> bool:
        """Dialysis or end-stage kidney disease (a Condition, a Procedure, or a value below
        ``patient_context.renal.esrd_below``)."""
        return bool(self.dialysis) or (self.value is not None and self.value.band == "esrd")

    @property
    def band(self) -> RenalBand | None:
        if self.esrd:
            return "esrd"
        return self.value.band if self.value else None

    @property
    def refs(self) -> tuple[str, ...]:
        """Every resource the renal decision used (the value's Observations, the Conditions)."""
        out = list(self.value.refs) if self.value else []
        out += [e.ref for e in self.dialysis if e.ref]
        if self.superseded:
            out += [e.ref for e in self.transplant + self.superseded if e.ref]
        return tuple(dict.fromkeys(out))


# --- baclofen history (clinical-rules section 2) -------------------------------------------

RegimenSource = Literal["MedicationRequest", "MedicationStatement", "MedicationDispense"]


@dataclass(frozen=True)
class Regimen:
    """One period of baclofen exposure read from a MedicationRequest, MedicationStatement or
    MedicationDispense. Doses are in mg (an intrathecal regimen's daily amount too: x1000 for
    micrograms)."""

    ref: str
    source: RegimenSource
    status: str
    route: Route
    start: datetime | None         # None: unknown
    end: datetime | None           # None: still running
    end_basis: str                 # how the end was found ("boundsPeriod.end", "open" ...)
    order: OrderFacts              # the dosage read like an order (steps, daily doses)

    @property
    def daily_mg(self) -> Fraction | None:
        """The daily dose of the first step (None when it cannot be read)."""
        step = self.order.first_step
        return step.daily_mg if step else None

    def active_at(self, t: datetime) -> bool:
        started = self.start is None or self.start <= t
        return started and (self.end is None or self.end > t)


@dataclass(frozen=True)
class TherapyTime:
    """Continuous exposure (gaps shorter than ``history.gap_days`` joined)."""

    start: datetime | None         # None: a regimen in the exposure has no known start
    days: Fraction | None          # None when the start is unknown
    refs: tuple[str, ...]          # the regimens joined


@dataclass(frozen=True)
class MedicationHistory:
    """Baclofen history for one checked order (the checked order itself is not in it)."""

    regimens: tuple[Regimen, ...]
    at: datetime                               # start of the checked order
    current: Regimen | None = None             # current oral regimen (section 2)
    current_intrathecal: Regimen | None = None  # same definition, intrathecal route

    @property
    def new_therapy(self) -> bool:
        """No current oral regimen."""
        return self.current is None


# --- other medicines in use (clinical-rules section 8) --------------------------------------

@dataclass(frozen=True)
class MedicationUse:
    """A medicine in use at the check time (clinical-rules section 8), read from an order,
    a MedicationRequest or a MedicationStatement of the context."""

    ref: str
    resource_type: str
    name: str                  # as written, for details
    names: tuple[str, ...]     # lower-case texts to match ingredients in (brands read as
                               # their ingredients, full ATC codes as their ingredient)
    baclofen: bool
    route: Route
    checked: bool              # an order of this call
    atc: tuple[str, ...] = ()  # WHO ATC codes of the medicine and its ingredients
    brands: tuple[str, ...] = ()   # "Percocet (oxycodone, acetaminophen)", for details


# --- one call's facts (built once per call by service/facts/build.py) -----------------------

@dataclass(frozen=True)
class OrderContext:
    """What the rules know about a checked order beyond the order itself: the patient at the
    order's start (age), the kidney function for that patient, and the baclofen history
    relative to the order."""

    patient: PatientFacts
    renal: RenalFacts
    history: MedicationHistory
    shows_taken: bool = False      # a cancelled order: a dispense, administration or start in
                                   # the past shows the drug was taken (clinical-rules s. 1)


@dataclass(frozen=True)
class CallFacts:
    """Every fact of one call, built once: the checked orders (each with its OrderContext, same
    index), the other baclofen orders, the medicines in use, and what the call says about
    itself (check time, profile, mode, hook, what could not be read)."""

    check_time: datetime
    profile: str
    mode: str
    hook: str | None
    orders: tuple[OrderFacts, ...]
    contexts: tuple[OrderContext, ...]
    others: tuple[OrderFacts, ...]                 # baclofen MedicationRequests of the context
    medications: tuple[MedicationUse, ...]
    warnings: tuple[Problem, ...] = ()
    unavailable: tuple[str, ...] = ()
