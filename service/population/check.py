"""One patient's record -> the native Bundle path, in review mode (no DuckDB, no files).

This is the half another engine reuses: it takes the record's resource lines (JSON text with
the file and line each came from) and returns plain data. ``from_export`` is the Bulk Data
door's adapter: the record's resources go to the assembler as a whole record, exactly as the
entries of a Bundle to ``POST /MedicationRequest/$check``: the same reading (every active
baclofen MedicationRequest is an order, review mode), engine and renderer. Draft
MedicationRequests are left out (they are not orders yet, and a draft would turn the review
into an order-time check), with an information note.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..assemble import CheckRequest, Pieces, Source, assemble
from ..engine import run_check
from ..errors import Problem, ServiceError
from ..facts.patient import patient_facts
from ..facts.renal import read_renal
from ..fhirjson import JSON
from ..jsonbody import parse_json_text
from ..knowledge import Knowledge
from ..output.fhir import render_result
from .export import Record

SEVERITIES = ("high", "moderate", "low")
_REF = re.compile(r"\b([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})")


@dataclass
class PatientResult:
    """What the review needs of one patient's check (picklable, small)."""

    pid: str
    issues: list[str] = field(default_factory=list)      # DetectedIssue JSON texts
    outcomes: list[str] = field(default_factory=list)    # OperationOutcome JSON texts
    on_baclofen: bool = False
    checked: bool = False          # the check ran (False: not on baclofen, or not checkable)
    orders: int = 0
    order_refs: list[str] = field(default_factory=list)
    findings: list[tuple[str, str, str]] = field(default_factory=list)  # rule, severity, text
    band: str | None = None        # renal band of the first order, "dialysis", or None
    renal_ml_min: float | None = None
    oral_daily_mg: float | None = None   # highest daily dose of an active oral order
    intrathecal: bool = False


def _outcome(pid: str, problems: list[Problem], where: dict[str, str],
             patient_too: bool = False) -> str:
    """One OperationOutcome for the patient; each issue names where the resources it
    mentions are in the export (and where the Patient is, for a patient not checked)."""
    issues = []
    for p in problems:
        text = f"Patient/{pid}: {p.message}"
        refs = _REF.findall(p.message) + ([f"Patient/{pid}"] if patient_too else [])
        places = [f"{ref} at {where[ref]}" for ref in dict.fromkeys(refs) if ref in where]
        if places:
            text += " [" + "; ".join(places) + "]"
        issue: JSON = {"severity": p.severity, "code": p.code, "diagnostics": text}
        if p.expression:
            issue["expression"] = [p.expression]
        issues.append(issue)
    return json.dumps({"resourceType": "OperationOutcome", "issue": issues})


def from_export(record: Record, check_time: datetime, profile: str, kb: Knowledge,
                notes: list[Problem] | None = None, where: dict[str, str] | None = None
                ) -> CheckRequest:
    """The Bulk Data patient's adapter: the record's resources are a whole record (as a
    Bundle's entries), reviewed; drafts and unreadable lines are left out, each named in
    ``notes``; ``where`` gets the file and line of each resource."""
    sources: list[Source] = []
    skipped: list[Problem] = []
    for item in record.lines:
        place = f"{item.file} line {item.line}"
        try:
            resource = parse_json_text(item.text)
        except ServiceError as exc:
            if notes is not None:
                notes.append(Problem(f"{item.file} line {item.line}: {exc}; not read",
                                     "invalid", None, "error"))
            continue
        if not isinstance(resource, dict):
            continue
        if not isinstance(resource.get("resourceType"), str):
            entry = f"Bundle.entry[{len(sources) + len(skipped)}]"
            skipped.append(Problem(f"{entry} skipped: it holds no resource", "structure", entry,
                                   "warning"))
            continue
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        if where is not None:
            where.setdefault(ref, place)
        if resource.get("resourceType") == "MedicationRequest" and \
                resource.get("status") == "draft":
            # a draft is not an order yet, and would turn the review into an order-time check
            if notes is not None:
                notes.append(Problem(f"{ref} is a draft order: not reviewed", "informational",
                                     None, "information"))
            continue
        sources.append(Source(resource, f"Bundle.entry[{len(sources) + len(skipped)}].resource"))
    return assemble(Pieces("bulk", "bundle", check_time, profile, record=sources, kb=kb,
                           notes=skipped))


def check_record(record: Record, check_time: datetime, profile: str, kb: Knowledge
                 ) -> PatientResult:
    """Check one patient's record in review mode."""
    result = PatientResult(record.pid)
    notes: list[Problem] = []
    where: dict[str, str] = {}
    try:
        req = from_export(record, check_time, profile, kb, notes, where)
        outcome = run_check(req, kb)
        rendered = render_result(req, outcome, kb)
    except ServiceError as exc:
        nothing = exc.status == 422 and any(p.code == "not-found" and
                                            p.message.startswith("nothing to check")
                                            for p in exc.problems)
        if not nothing:
            result.outcomes.append(_outcome(record.pid, notes + exc.problems, where, True))
        elif notes and any(n.severity == "error" for n in notes):
            result.outcomes.append(_outcome(record.pid, notes, where))
        return result
    result.on_baclofen = True
    result.checked = True
    result.orders = len(req.orders)
    result.order_refs = [it.ref for it in req.orders]
    # the findings and the engine's notes themselves; the rendered DetectedIssues are only
    # written out
    for issue in rendered.issues:
        f = issue.finding
        result.issues.append(json.dumps(issue.resource))
        result.findings.append((f.rule_id, f.severity, f.detail[:300]))
    notes += outcome.notes
    if notes:
        result.outcomes.append(_outcome(record.pid, notes, where))
    _figures(result, req, outcome, kb)
    return result


def _figures(result: PatientResult, req: Any, outcome: Any, kb: Knowledge) -> None:
    """Kidney band and daily dose for the summary and the report (read as the engine reads
    them for the first baclofen order)."""

    baclofen = [o for o in outcome.orders if o.is_baclofen]
    if not baclofen:
        return
    oral = [o.first_step.daily_mg for o in baclofen
            if o.route == "oral" and o.first_step is not None
            and o.first_step.daily_mg is not None]
    result.oral_daily_mg = float(max(oral)) if oral else None
    result.intrathecal = any(o.route == "intrathecal" for o in baclofen)
    order = baclofen[0]
    items = [(it.ref, it.resource) for it in req.context]
    patient = patient_facts(req.patient.resource if req.patient else {},
                            req.patient.ref if req.patient else "Patient/unknown",
                            order.start, items, req.check_time, kb)
    adult_from = kb.typed.patient_context.renal.cockcroft_gault.age_from
    egfr_only = patient.age is not None and patient.age.low_years < adult_from
    renal = read_renal(items, patient, req.check_time, kb, egfr_only)
    if renal.dialysis:
        result.band = "dialysis"
    elif renal.value is not None:
        result.band = renal.value.band
    if renal.value is not None:
        result.renal_ml_min = float(renal.value.rounded_ml_min)
