"""Findings -> FHIR R4 DetectedIssues and the result Bundle (interfaces.md sections 2 and 3).

The one place that writes FHIR output. Resources are built as plain JSON (the tests validate
every one against the R4B models and the required value sets).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ..checkrequest import CheckRequest, Item
from ..engine import CheckOutcome
from ..errors import Problem
from ..fhirjson import JSON, walk
from ..fhirmodel import model_problem
from ..findings import Finding
from ..knowledge import Knowledge

RULE_SYSTEM = "urn:baclofen-check:rule"
FINDING_SYSTEM = "urn:baclofen-check:finding"
DEVICE_NAME = "baclofen-check"


def iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        raise ValueError("naive datetime")
    text = dt.isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True)
class IssueEntry:
    """A finding and what was rendered for it: its DetectedIssue and the Bundle entry holding
    it (write-back rewrites both with the server's id). Read the finding, not the JSON."""

    finding: Finding
    resource: JSON
    entry: JSON


@dataclass(frozen=True)
class ResultBundle:
    """The result Bundle and, in its order, each finding with its DetectedIssue entry."""

    bundle: JSON
    issues: list[IssueEntry]


def detected_issue(
    f: Finding, kb: Knowledge, patient_ref: str, check_time: datetime, status: str = "final"
) -> JSON:
    spec = kb.rule(f.rule_id)
    fid = f.id
    code: JSON = {"text": spec.title}
    if f.code:
        code["coding"] = [{
            "system": kb.code_system, "code": f.code, "display": kb.code_display[f.code],
        }]
    issue: JSON = {
        "resourceType": "DetectedIssue",
        "id": f"bc-{fid}",
        "contained": [{
            "resourceType": "Device",
            "id": "checker",
            "deviceName": [{"name": DEVICE_NAME, "type": "user-friendly-name"}],
            "version": [{"value": kb.version}],
        }],
        "identifier": [
            {"system": RULE_SYSTEM, "value": f.rule_id},
            {"system": FINDING_SYSTEM, "value": fid},
        ],
        "status": status,
        "code": code,
        "severity": f.severity,
        "patient": {"reference": patient_ref},
        "identifiedDateTime": iso(check_time),
        "author": {"reference": "#checker", "display": f"{DEVICE_NAME} {kb.version}"},
        "implicated": [{"reference": r} for r in dict.fromkeys((f.order_ref, *f.implicated))],
        "detail": f.detail,
        "reference": spec.source_url,
    }
    if f.evidence:
        issue["evidence"] = [{"detail": [{"reference": r} for r in dict.fromkeys(f.evidence)]}]
    return issue


def operation_outcome(problems: Iterable[Problem]) -> JSON:
    issues = []
    for p in problems:
        issue: JSON = {"severity": p.severity, "code": p.code, "diagnostics": p.message}
        if p.expression:
            issue["expression"] = [p.expression]
        issues.append(issue)
    if not issues:
        issues = [{"severity": "information", "code": "informational",
                   "diagnostics": "no issues"}]
    return {"resourceType": "OperationOutcome", "issue": issues}


def _references(resource: JSON) -> list[str]:
    return [v["reference"] for v in walk(resource)
            if isinstance(v, dict) and isinstance(v.get("reference"), str)]


def _urn(text: str) -> str:
    return f"urn:uuid:{uuid.UUID(hex=hashlib.sha256(text.encode()).hexdigest()[:32])}"


def result_bundle(
    req: CheckRequest, outcome: CheckOutcome, kb: Knowledge, status: str = "final"
) -> JSON:
    return render_result(req, outcome, kb, status).bundle


def render_result(
    req: CheckRequest, outcome: CheckOutcome, kb: Knowledge, status: str = "final"
) -> ResultBundle:
    """The result Bundle, with each finding beside its DetectedIssue entry."""
    patient_ref = req.patient.ref if req.patient else "Patient/unknown"
    entries: list[JSON] = []
    issues: list[IssueEntry] = []
    # in the order the findings name them (a dict, not a set: the echoed resources come in
    # the same order in every process)
    referenced: dict[str, None] = {patient_ref: None}
    for f in outcome.findings:
        issue = detected_issue(f, kb, patient_ref, req.check_time, status)
        referenced.update(dict.fromkeys((f.order_ref, *f.implicated, *f.evidence)))
        entry = {"fullUrl": _urn(f"bc-{f.id}"), "resource": issue}
        entries.append(entry)
        issues.append(IssueEntry(f, issue, entry))
    # Input resources without an id travel in the result so that references to them resolve,
    # and so do the id-less resources those reference in turn (a bundled Medication).
    if outcome.findings:
        idless = {item.ref: item for item in req.items() if not item.has_id}
        if req.index is not None:
            idless.update((ref, Item(res, ref, False)) for ref, res in req.index.urn_entries())
        pending = [r for r in referenced if r in idless]
        included: set[str] = set()
        while pending:
            ref = pending.pop(0)
            if ref in included:
                continue
            included.add(ref)
            resource = idless[ref].resource
            if model_problem(resource, idless[ref].type):
                # context is read from JSON, not validated: an input that is not valid R4
                # stays out rather than make the result Bundle invalid
                continue
            entries.append({"fullUrl": ref, "resource": resource})
            pending += [r for r in _references(resource) if r in idless and r not in included]
    if outcome.notes:
        entries.append({
            "fullUrl": _urn("outcome:" + "|".join(p.message for p in outcome.notes)),
            "resource": operation_outcome(outcome.notes),
        })
    return ResultBundle({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": iso(req.check_time),
        "entry": entries,
    }, issues)
