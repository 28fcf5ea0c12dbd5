"""One call from a parsed body to a result Bundle: used by the HTTP API and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .engine import CheckOutcome, run_check
from .fhir_input.request import CheckRequest, parse_body
from .fhirjson import JSON
from .knowledge import Knowledge, load
from .output.fhir import ResultBundle, render_result


def check_body(
    body: Any, now: datetime, profile: str, kb: Knowledge | None = None
) -> tuple[JSON, CheckRequest, CheckOutcome]:
    """Parse, check and render. Raises ServiceError for input that cannot be checked."""
    result, req, outcome = check_result(body, now, profile, kb)
    return result.bundle, req, outcome


def check_result(
    body: Any, now: datetime, profile: str, kb: Knowledge | None = None
) -> tuple[ResultBundle, CheckRequest, CheckOutcome]:
    """``check_body`` with each finding beside its DetectedIssue entry (what the audit trail
    and write-back read)."""
    knowledge = kb or load()
    req = parse_body(body, now, profile)
    outcome = run_check(req, knowledge)
    return render_result(req, outcome, knowledge), req, outcome
