"""One scenario through both front doors: the native ``$check`` (Parameters) and CDS Hooks
``order-sign`` (the same resources as prefetch), each answering {rule id: severity}.

CDS Hooks checks at the time of the call: the app's clock, fixed at
``tests.support.checks.CLOCK_TIME`` (the conftest ``client``). Scenarios are dated from it
(``ago``), and the native call is given the same check time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask.testing import FlaskClient

from tests.support import builders as b
from tests.support.cdsclient import EXT, cards, hook_call, post, searchset
from tests.support.checks import CLOCK_TIME, post_check
from tests.support.fhir_validate import validate

NOW = CLOCK_TIME

# prefetch key per resource type (the service reads every key the same way)
_KEY = {"Observation": "egfr", "Condition": "conditions", "Procedure": "procedures",
        "MedicationRequest": "medicationRequests",
        "MedicationStatement": "medicationStatements",
        "MedicationDispense": "medicationDispenses", "Medication": "medicationRequests"}


def ago(days: float, hour: int = 8) -> str:
    """A dateTime ``days`` before now (at ``hour`` o'clock UTC, so a day count is whole)."""
    t = (NOW - timedelta(days=days)).replace(hour=hour, minute=0, second=0)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def born(years: float) -> str:
    """A birth date making the patient ``years`` old now (half a year past the birthday)."""
    return (NOW - timedelta(days=365.25 * years + 182)).strftime("%Y-%m-%d")


def _rules(issues: list[dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for di in issues:
        out[di["identifier"][0]["value"]] = di["severity"]
    return out


def native(client: FlaskClient, orders: list[dict[str, Any]], pat: dict[str, Any],
           context: list[dict[str, Any]], profile: str | None = None
           ) -> tuple[dict[str, str], dict[str, Any]]:
    body = b.parameters(*orders, pat=pat, context=context,
                        check_time=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"), profile=profile)
    resp = post_check(client, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    result = resp.get_json()
    validate(result)
    return _rules(b.issues(result)), result


def cds(client: FlaskClient, orders: list[dict[str, Any]], pat: dict[str, Any],
        context: list[dict[str, Any]]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in context:
        grouped.setdefault(_KEY[r["resourceType"]], []).append(r)
    body = hook_call(*orders, patient=pat,
                     prefetch={k: searchset(*v) for k, v in grouped.items()})
    got = cards(post(client, body))
    issues: list[dict[str, Any]] = []
    for card in got:
        ext = card.get("extension", {}).get(EXT)
        issues += ext if isinstance(ext, list) else [ext] if ext else []
    return _rules(issues), got


def both(client: FlaskClient, orders: list[dict[str, Any]], pat: dict[str, Any],
         context: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """{rule: severity} natively and through CDS Hooks (draft orders only)."""
    return native(client, orders, pat, context)[0], cds(client, orders, pat, context)[0]


def detail(result: dict[str, Any], rule_id: str) -> str:
    return str(b.by_rule(result, rule_id)["detail"])


def assert_both(client: FlaskClient, orders: list[dict[str, Any]], pat: dict[str, Any],
                context: list[dict[str, Any]], expected: dict[str, str | None]) -> dict[str, str]:
    """Each expected rule at its severity (None: absent) through both doors; the native
    findings are returned."""
    got_native, got_cds = both(client, orders, pat, context)
    for door, got in (("native", got_native), ("cds", got_cds)):
        for rule, severity in expected.items():
            assert got.get(rule) == severity, (door, rule, got)
    return got_native
