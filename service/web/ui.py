"""The web page (issue 9): try an order, browse the rules, see how alerts are received.

Server-rendered HTML (Jinja templates in service/templates, plain JavaScript and CSS in
service/static; nothing fetched from outside). The page itself holds no clinical logic: the
"try an order" page calls the service's own public endpoints from the browser
(``POST /cds-services/baclofen-order-sign`` and ``POST /MedicationRequest/$check``) under the
same authentication as any other caller, and the alert report page reads ``GET /report``.

- ``GET /``: try an order against a bundled demo patient or a pasted Bundle/Parameters.
- ``GET /rules``: every rule of the knowledge data (generated from it, never a second copy).
- ``GET /alerts``: per rule fired / accepted / overridden, read from ``GET /report``.
- ``GET /report``: the alert report as JSON (the audit store's report), authenticated like
  the FHIR endpoints (API_REQUIRE_AUTH, API_TOKENS).
- ``GET /demo/<name>``: a bundled demo patient (``fixtures/demo-<name>.json``) with its dates
  moved so that the record is as old, relative to today, as it was on the day it was written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request
from sqlalchemy.exc import SQLAlchemyError

from ..cds.discovery import prefetch_templates
from ..config import Settings
from ..errors import Problem, ServiceError
from ..knowledge import Knowledge, recognition_rows, rule_knowledge
from ..output.cards import OVERRIDE_REASONS
from ..store import get_store
from . import context
from .auth import authenticate
from .context import knowledge

bp = Blueprint("ui", __name__)

# The demo patients live with the other fixtures at the top of the checkout.
DEMO_DIR = Path(__file__).resolve().parents[2] / "fixtures"
DEMO_TAG_SYSTEM = "urn:baclofen-check:demo"
_DEMO_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,60}$")
# A FHIR date or dateTime value (what the demo date shift moves).
_FHIR_DATE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))?$")

# Families whose thresholds also depend on the rule profile (clinical-rules section 3).
PROFILE_FAMILIES = ("oral", "pediatric")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def settings() -> Settings:
    s: Settings = current_app.config["SETTINGS"]
    return s


def _page(template: str, **context: Any) -> Response:
    cfg = settings()
    kb = knowledge()
    html = render_template(
        template, knowledge_version=kb.version, profile=cfg.profile,
        api_auth=cfg.api_require_auth, cds_jwt=cfg.cds_require_jwt, **context)
    resp = Response(html, mimetype="text/html")
    for key, value in SECURITY_HEADERS.items():
        resp.headers[key] = value
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --- demo patients ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Demo:
    name: str
    label: str
    path: Path


def demo_dir() -> Path:
    """Where the demo patients are: ``fixtures/`` of the checkout, else ``fixtures/`` under the
    working directory (``DEMO_DIR`` in the app config overrides both, for tests)."""
    configured = current_app.config.get("DEMO_DIR")
    if configured:
        return Path(configured)
    # an installed copy (the container image) finds them under the working directory
    return DEMO_DIR if DEMO_DIR.is_dir() else Path.cwd() / "fixtures"


def demos(directory: Path | None = None) -> list[Demo]:
    """The bundled demo patients, in file-name order; the label is the Bundle's demo tag."""
    directory = demo_dir() if directory is None else directory
    out = []
    for path in sorted(directory.glob("demo-*.json")) if directory.is_dir() else []:
        name = path.stem.removeprefix("demo-")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        label = name
        for tag in data.get("meta", {}).get("tag", []):
            if tag.get("system") == DEMO_TAG_SYSTEM and tag.get("display"):
                label = str(tag["display"])
        out.append(Demo(name, label, path))
    return out


def shift_dates(value: Any, days: int) -> Any:
    """Every FHIR date/dateTime string in ``value`` moved by whole days (structure kept)."""
    if isinstance(value, dict):
        return {k: shift_dates(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [shift_dates(v, days) for v in value]
    if isinstance(value, str):
        m = _FHIR_DATE.match(value)
        if m:
            try:
                moved = date(int(m.group(1)), int(m.group(2)), int(m.group(3))) + timedelta(days)
            except ValueError:
                return value
            return moved.isoformat() + (m.group(4) or "")
    return value


def demo_bundle(demo: Demo, today: date) -> dict[str, Any]:
    """The demo Bundle with its dates moved so that its ``timestamp`` day becomes ``today``.

    choice: the demo records are written on one day (their Bundle ``timestamp``); moving every
    date by the same number of days keeps each patient's age, the age of each result and the
    time on therapy as written, so the demos give the same findings on any day.
    """
    data: dict[str, Any] = json.loads(demo.path.read_text(encoding="utf-8"))
    stamp = _FHIR_DATE.match(str(data.get("timestamp", "")))
    if not stamp:
        return data
    written = date(int(stamp.group(1)), int(stamp.group(2)), int(stamp.group(3)))
    shifted: dict[str, Any] = shift_dates(data, (today - written).days)
    return shifted


@bp.get("/demo/<name>")
def demo(name: str) -> Response:
    found = {d.name: d for d in demos()} if _DEMO_NAME.match(name) else {}
    if name not in found:
        raise ServiceError(404, [Problem(f"no demo patient {name!r}", "not-found")])
    body = demo_bundle(found[name], context.now().date())
    resp = Response(json.dumps(body, indent=2), mimetype="application/fhir+json")
    resp.headers["Cache-Control"] = "no-store"  # its dates move every day
    return resp


# --- pages -----------------------------------------------------------------------------------

@bp.get("/")
def try_page() -> Response:
    kb = knowledge()
    rec = kb.typed.recognition
    page_data = {
        "demos": [{"name": d.name, "label": d.label} for d in demos()],
        "prefetch": prefetch_templates(kb),
        "service": "baclofen-order-sign",
        "viewService": "baclofen-patient-view",
        "rxnorm": {"system": rec.rxnorm_system, "code": rec.baclofen_rxnorm[0]},
        "routes": {"oral": rec.oral_route_snomed[0],
                   "intrathecal": rec.intrathecal_route_snomed[0],
                   "gastrostomy": rec.enteral_route_snomed[0]},
        "ruleIds": list(kb.rules),
        "timingCodes": {code: float(n) for code, n in kb.timing_codes.items()},
        "overrideReasons": [{"code": c, "display": d} for c, d in OVERRIDE_REASONS],
        "apiAuth": settings().api_require_auth,
        "cdsJwt": settings().cds_require_jwt,
    }
    return _page("try.html", title="Try an order", active="try",
                 demos=page_data["demos"], page_data=page_data)


def rule_rows(kb: Knowledge) -> list[dict[str, Any]]:
    """One row per rule, straight from the knowledge data."""
    rows = []
    for rule in kb.rules.values():
        sources = [(rule.source_key, kb.typed.sources[rule.source_key])]
        if rule.also is not None:   # a known source (checked at load)
            sources.append((rule.also, kb.typed.sources[rule.also]))
        profile_values: list[tuple[str, list[Any]]] = []
        if rule.family in PROFILE_FAMILIES:
            keys = [k for p in kb.profiles.values() for k in p.raw if k != "label"]
            for key in dict.fromkeys(keys):
                profile_values.append(
                    (key, [p.raw.get(key, "-") for p in kb.profiles.values()]))
        rows.append({
            "id": rule.id,
            "family": rule.family,
            "title": rule.title,
            "fires_when": rule.fires_when,
            "severity": rule.severity,
            "code": rule.code,
            "code_display": kb.code_display.get(rule.code) if rule.code else None,
            "thresholds": rule.thresholds(),
            "profile_values": profile_values,
            "reads": rule_knowledge(kb, rule.id),
            "sources": [{"key": k, "title": s.title, "url": s.url} for k, s in sources],
        })
    return rows


def renal_values(kb: Knowledge) -> list[tuple[str, str]]:
    """The kidney-function values the renal rules read (patient_context.renal of the knowledge
    data): every number and table of numbers, without the code lists."""
    section = kb.data.get("patient_context", {}).get("renal", {})
    out: list[tuple[str, str]] = []
    for key, value in section.items():
        if isinstance(value, bool) or isinstance(value, list):
            continue
        if isinstance(value, dict):
            if all(isinstance(v, int | float | str) for v in value.values()):
                out.append((key, ", ".join(f"{k} {v}" for k, v in value.items())))
            continue
        out.append((key, str(value)))
    return out


@bp.get("/rules")
def rules_page() -> Response:
    kb = knowledge()
    families = list(dict.fromkeys(r.family for r in kb.rules.values()))
    return _page("rules.html", title="Rules", active="rules", rules=rule_rows(kb),
                 families=families, profiles=list(kb.profiles.values()),
                 code_system=kb.code_system, renal=renal_values(kb),
                 recognition=recognition_rows(kb))


@bp.get("/alerts")
def alerts_page() -> Response:
    return _page("alerts.html", title="Alert report", active="alerts")


@bp.get("/report")
def report() -> Response:
    """The alert report as JSON: per rule fired, accepted, overridden and the top override
    reasons (from the audit store). Authenticated like the FHIR endpoints."""
    authenticate(request, settings(), report=True)
    kb = knowledge()
    reasons = dict(OVERRIDE_REASONS)
    try:
        recorded = get_store(current_app).report()
    except SQLAlchemyError as exc:
        raise ServiceError(503, [Problem("the audit store cannot be read now; try again",
                                         "transient")]) from exc
    rows = []
    for r in recorded:
        spec = kb.rules.get(r.rule_id)
        rows.append({
            "rule": r.rule_id,
            "title": spec.title if spec else r.rule_id,
            "fired": r.fired,
            "accepted": r.accepted,
            "overridden": r.overridden,
            "overrideReasons": [{"code": code, "display": reasons.get(code, code),
                                 "count": n} for code, n in r.top_override_reasons],
            "medianLatencyMs": r.median_latency_ms,
            "overrideComments": [{"reason": code, "display": reasons.get(code, code)
                                  if code else None, "comment": text}
                                 for code, text in r.comments],
        })
    body = {"knowledgeVersion": kb.version,
            "generated": context.now().isoformat(timespec="seconds"),
            "rules": rows}
    resp = Response(json.dumps(body), mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


__all__ = ["bp", "demos", "demo_bundle", "shift_dates", "rule_rows"]
