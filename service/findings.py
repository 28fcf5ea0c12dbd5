"""A finding: what one rule decided about one order, before it is written as FHIR or a card."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

SEVERITY_RANK = {"low": 1, "moderate": 2, "high": 3}


def finding_id(rule_id: str, order_ref: str, dose_key: str, knowledge_version: str) -> str:
    """The stable id of a finding: a hash of its rule, order, dose and the knowledge version
    (a changed dose or new knowledge is a new finding). The DetectedIssue is ``bc-<id>`` and
    carries the id as its ``urn:baclofen-check:finding`` identifier."""
    data = "\x1f".join((rule_id, order_ref, dose_key, knowledge_version))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class Correction:
    """A safe corrected dose for one order: the daily total to aim for and how to give it."""

    dose_mg: Fraction           # per administration
    per_day: Fraction           # administrations per day
    label: str                  # "Reduce to 10 mg three times a day (30 mg/day)"
    unit: str = "mg"            # mg for oral, ug for intrathecal


@dataclass(frozen=True)
class Judged:
    """The numbers a rule judged, each None where it judged none. Doses in mg (intrathecal
    ones too); ``limit`` in ``limit_unit``; the kidney function in mL/min, rounded as the rules
    compare it, with its kind (``CrCl``, ``eGFR`` or ``CKD stage``) and source (as
    RenalCandidate.source)."""

    daily_mg: Fraction | None = None
    dose_mg: Fraction | None = None
    limit: Fraction | None = None
    limit_unit: str | None = None          # "mg/day", "mg", "mg/kg/day", "ug", "ug/day"
    renal_ml_min: Fraction | None = None
    renal_kind: str | None = None
    renal_source: str | None = None


@dataclass(frozen=True)
class Finding:
    """What one rule decided about one order. Everything after the rendering reads these
    fields (audit, write-back, cards, batch summaries, metrics, watch, population), never the
    rendered DetectedIssue."""

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
    id: str = ""                # finding_id(): the DetectedIssue's id and finding identifier
    code: str | None = None     # the DetectedIssue code (knowledge: the rule's ``code``)
    judged: Judged = Judged()

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]


def worse(a: str, b: str) -> str:
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b
