"""context.unavailable: data the service tried to get and could not (clinical-rules section 9).

Pure: the names of what could not be read come in (``CheckRequest.unavailable``: CDS prefetch
keys, or the reads of ``POST /MedicationRequest/{id}/$check``), one low finding per checked
order comes out, naming what is missing and which checks could not run. No code (code.text
only, as the rule table says).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..findings import Finding
from ..model import OrderFacts
from . import RuleContext

RULE_ID = "context.unavailable"

# What each input is, for people, and the checks that need it. Keys are the CDS Hooks prefetch
# keys (service/cds/discovery.py), which the by-id check reuses for its reads.
INPUTS: dict[str, tuple[str, str]] = {
    "patient": ("the patient record", "the age-based checks"),
    "egfr": ("eGFR results", "the kidney-function dose checks"),
    "creatinineClearance": ("creatinine clearance results", "the kidney-function dose checks"),
    "creatinine": ("serum creatinine results", "the kidney-function dose checks"),
    "weight": ("body weight", "the weight-based checks"),
    "height": ("body height", "the weight-based checks"),
    "pregnancy": ("pregnancy status observations", "the pregnancy check"),
    "conditions": ("conditions", "the kidney-disease, dialysis and pregnancy checks"),
    "dialysis": ("dialysis procedures", "the dialysis check"),
    "procedures": ("procedures", "the dialysis check"),
    "medicationRequests": ("medication orders",
                           "the interaction, duplicate-order and dose-history checks"),
    "medicationStatements": ("medication statements",
                             "the interaction and dose-history checks"),
    "medicationDispenses": ("medication dispenses", "the interaction and dose-history checks"),
}


def _describe(key: str) -> tuple[str, str | None]:
    known = INPUTS.get(key)
    return known if known else (key, None)


def unavailable(ctx: RuleContext, order: OrderFacts, missing: Sequence[str]) -> list[Finding]:
    """One low finding for ``order`` when anything in ``missing`` could not be read."""
    if not missing:
        return []
    labels: list[str] = []
    checks: list[str] = []
    for key in dict.fromkeys(missing):
        label, check = _describe(key)
        labels.append(label)
        if check and check not in checks:
            checks.append(check)
    what = ", ".join(labels)
    could_not = "; ".join(checks) if checks else "the checks that need them"
    detail = (f"Some patient data could not be read: {what}. These checks could not run: "
              f"{could_not}; review them by hand before relying on this result.")
    return [ctx.finding(RULE_ID, "low", order, f"Could not read: {what}"[:139], detail)]
