"""One call from a parsed body to a result Bundle: used by the HTTP API and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .assemble.native import parse_body
from .checkrequest import CheckRequest
from .engine import CheckOutcome, run_check
from .fhirjson import JSON
from .knowledge import Knowledge
from .output.fhir import ResultBundle, render_result


def check_body(
    body: Any, now: datetime, profile: str, kb: Knowledge
) -> tuple[JSON, CheckRequest, CheckOutcome]:
    """Parse, check and render. Raises ServiceError for input that cannot be checked."""
    result, req, outcome = check_result(body, now, profile, kb)
    return result.bundle, req, outcome


def check_result(
    body: Any, now: datetime, profile: str, kb: Knowledge
) -> tuple[ResultBundle, CheckRequest, CheckOutcome]:
    """``check_body`` with each finding beside its DetectedIssue entry (what the audit trail
    and write-back read). ``kb``: the caller's knowledge (create_app's, the CLI's)."""
    knowledge = kb
    req = parse_body(body, now, profile, knowledge)
    outcome = run_check(req, knowledge)
    return render_result(req, outcome, knowledge), req, outcome
