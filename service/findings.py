"""A finding: what one rule decided about one order, before it is written as FHIR or a card."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

SEVERITY_RANK = {"low": 1, "moderate": 2, "high": 3}


@dataclass(frozen=True)
class Correction:
    """A safe corrected dose for one order: the daily total to aim for and how to give it."""

    dose_mg: Fraction           # per administration
    per_day: Fraction           # administrations per day
    label: str                  # "Reduce to 10 mg three times a day (30 mg/day)"
    unit: str = "mg"            # mg for oral, ug for intrathecal


@dataclass(frozen=True)
class Finding:
    rule_id: str
    severity: str
    order_ref: str
    summary: str                # one line with the key number (cards use it, < 140 chars)
    detail: str                 # one or two plain sentences with the numbers
    implicated: tuple[str, ...] = ()   # other orders involved (the checked order goes first)
    evidence: tuple[str, ...] = ()     # Observations, Conditions, orders the decision used
    dose_key: str = ""
    correction: Correction | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]


def worse(a: str, b: str) -> str:
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b
