"""The tests' credentials and the two ways to run a check: in-process (``run``) and through
``POST /MedicationRequest/$check`` (``post_check``, ``http_run``); the foundation findings of a
result (``found``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.checker import check_body
from service.clock import fixed_clock
from service.knowledge import load
from tests.support.builders import issues
from tests.support.fhir_validate import validate

TOKEN = "test-token"
WRITE_TOKEN = "writer-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# The check time of the tests (builders.CHECK_TIME): the clock of the apps they make
# (create_app(..., clock=CLOCK)), so that a CDS call's "now" is fixed and its data are dated
# from CLOCK_TIME, never from the wall clock.
CLOCK_TIME = datetime(2026, 11, 25, 10, tzinfo=UTC)
CLOCK = fixed_clock(CLOCK_TIME)


def post_check(client: FlaskClient, body: Any, **kw: Any) -> Any:
    headers = {"Content-Type": "application/fhir+json", **AUTH, **kw.pop("headers", {})}
    return client.post("/MedicationRequest/$check", json=body, headers=headers, **kw)


def run(body: dict[str, Any], profile: str = "us") -> dict[str, Any]:
    """Check in-process and validate everything emitted."""
    result, _req, _out = check_body(body, datetime(2026, 11, 25, 10, tzinfo=UTC), profile,
                                    load())
    validate(result)
    return result


# The rules of the oral foundation. Findings of other families (start dose, titration, kidneys,
# age) depend on context the oral tests do not vary and are tested in their own files.
FOUNDATION_RULES = frozenset({
    "oral.max-daily", "oral.max-single", "oral.probable-error", "oral.frequency",
    "oral.duplicate", "order.unverifiable-dose", "order.prn-no-max", "units.oral-microgram",
    "units.liquid-volume",
})


def found(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(rule id, severity) of every foundation finding, sorted."""
    return sorted((di["identifier"][0]["value"], di["severity"]) for di in issues(result)
                  if di["identifier"][0]["value"] in FOUNDATION_RULES)


def found_ids(result: dict[str, Any]) -> list[str]:
    return [rule for rule, _severity in found(result)]


def http_run(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Check through POST /MedicationRequest/$check and validate the result Bundle."""
    resp = post_check(client, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    result: dict[str, Any] = resp.get_json()
    validate(result)
    return result


def make_app(tmp_path: Path, base: str, token: str | None, timeout: float = 5) -> Flask:
    """An app that reads its records from the FHIR server at ``base``."""
    return create_app({
        "API_REQUIRE_AUTH": True,
        "API_TOKENS": f"{TOKEN},{WRITE_TOKEN}:write",
        "CDS_REQUIRE_JWT": False,
        "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
        "FHIR_SERVER_URL": base,
        "FHIR_SERVER_TOKEN": token,
        "OUTBOUND_TIMEOUT_S": timeout,
        "TESTING": True,
    })
