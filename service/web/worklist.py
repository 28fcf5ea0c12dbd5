"""The pharmacist worklist over HTTP (issue 20; the logic is service/watch/worklist.py).

- ``GET /worklist``: the page (service/templates/worklist.html, service/static/worklist.js);
  it reads and posts the two endpoints below from the browser, under the same authentication
  as any other caller.
- ``GET /worklist.json``: ``{"entries": [...], "total": N, "page", "perPage"}``, highest
  severity first, then the oldest. Query: ``severity`` (comma list of high, moderate, low, or
  ``all``; default high,moderate), ``rule`` (comma list of rule ids or families such as
  ``renal``), ``older_than_h`` / ``newer_than_h`` (hours open), ``page`` (from 1),
  ``per_page`` (1-200, default 50). Authenticated like the alert report: the list spans every
  patient, so a ``patient/`` access token cannot read it.
- ``POST /worklist/{finding id}/resolve`` with ``{"outcome", "comment"}``: ``200`` with the
  resolved entry; ``404`` unknown finding, ``400`` unknown outcome or bad body, ``409`` already
  resolved (or no longer open). Needs write access (a ``:write`` token, or an access token
  with create and update on DetectedIssue): it writes the DetectedIssue's ``mitigation``.

The worklist exists where the watch does (WATCH_NOTIFY_TOKEN or WATCH_NOTIFY_HMAC_SECRET
set); otherwise both endpoints answer ``404`` and the page says the watch is off.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from ..config import Settings
from ..errors import Problem, ServiceError, bad_request
from ..fhir_input.fetch import fhir_server_client
from ..jsonbody import JSON_TYPES, parse_json_text
from ..outbound.deadline import Deadline, FetchFailure
from ..watch import worklist as wl
from . import context
from .auth import authenticate
from .body import media_type
from .ui import _page

bp = Blueprint("worklist", __name__)
log = logging.getLogger("baclofen_check.watch")
_FINDING = re.compile(r"^[A-Za-z0-9\-.]{1,200}$")
_SEVERITIES = ("high", "moderate", "low")
_RULE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{0,100}$")


def _settings() -> Settings:
    s: Settings = current_app.config["SETTINGS"]
    return s


def _watch() -> Any:
    ws = current_app.extensions.get("watch")
    if ws is None:
        raise ServiceError(404, [Problem("the worklist is off: the watch is not configured "
                                         "(WATCH_NOTIFY_TOKEN)", "not-found")])
    return ws


def _unavailable(exc: Exception) -> ServiceError:
    log.warning("the worklist store cannot be used now", extra={
        "event": "worklist-store-unavailable", "error_type": type(exc).__name__})
    return ServiceError(503, [Problem("the worklist cannot be read or written now; try again",
                                      "transient")], {"Retry-After": "5"})


def _hours(name: str) -> float | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise bad_request(f"{name} must be a number of hours, not {raw!r}") from exc
    if not 0 <= value <= 24 * 3650:
        raise bad_request(f"{name} must be between 0 and {24 * 3650} hours")
    return value


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise bad_request(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _query() -> wl.Query:
    allowed = {"severity", "rule", "older_than_h", "newer_than_h", "page", "per_page"}
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise bad_request(f"unknown query parameter(s): {', '.join(unknown)} (use "
                          f"{', '.join(sorted(allowed))})")
    raw = request.args.get("severity") or ",".join(wl.LISTED)
    severities = set(_SEVERITIES) if raw == "all" else {s.strip() for s in raw.split(",")}
    if not severities or not severities <= set(_SEVERITIES):
        raise bad_request("severity must be a comma list of high, moderate, low, or all")
    rules = {r.strip() for r in (request.args.get("rule") or "").split(",") if r.strip()}
    if any(not _RULE.match(r) for r in rules):
        raise bad_request("rule must be a comma list of rule ids (e.g. renal.dose-band) or "
                          "families (e.g. renal)")
    return wl.Query(frozenset(severities), frozenset(rules), _hours("older_than_h"),
                    _hours("newer_than_h"), _int("page", 1, 1, 100000),
                    _int("per_page", 50, 1, wl.MAX_PER_PAGE))


def _json(body: Any, status: int = 200) -> Response:
    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/worklist.json")
def worklist_json() -> Response:
    authenticate(request, _settings(), report=True)
    ws = _watch()
    query = _query()
    try:
        return _json(wl.worklist(ws, query, context.now()))
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc


@bp.post("/worklist/<finding_id>/resolve")
def resolve(finding_id: str) -> Response:
    settings = _settings()
    who = authenticate(request, settings, write=True, report=True)
    ws = _watch()
    if not _FINDING.match(finding_id):
        raise ServiceError(404, [Problem(f"no finding {finding_id!r} on the worklist",
                                         "not-found")])
    if media_type(request) not in JSON_TYPES:
        raise ServiceError(415, [Problem("send the resolution as JSON (application/json)",
                                         "not-supported")])
    body = parse_json_text(request.get_data(cache=False))
    if not isinstance(body, dict):
        raise bad_request('the body must be a JSON object {"outcome": "..", "comment": ".."}')
    extra = sorted(set(body) - {"outcome", "comment"})
    if extra:
        raise bad_request(f"unknown member(s) {', '.join(extra)}: send outcome and comment")
    now = context.now()
    try:
        done = wl.resolve(ws, finding_id, body.get("outcome"), body.get("comment"), who, now)
    except wl.Refused as exc:
        code = {404: "not-found", 409: "conflict"}.get(exc.status, "value")
        raise ServiceError(exc.status, [Problem(str(exc), code)]) from exc
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc
    log.info("worklist finding resolved", extra={
        "event": "worklist-resolved", "finding": finding_id, "outcome": done.record["outcome"]})
    if settings.fhir_server_url:
        _write(ws, settings, done.record)
    out = wl.entry(done.state)
    out["resolution"] = wl._resolution_json(done.record)
    return _json(out)


def _write(ws: Any, settings: Settings, record: dict[str, Any]) -> None:
    """The mitigation (and the Task) on the server now; when it cannot be written, the
    resolution stays recorded as pending and the worker's sync writes it later."""
    try:
        wl.write_resolution(ws, settings, fhir_server_client(settings), record,
                            Deadline(max(settings.outbound_timeout_s, 5.0)))
    except (FetchFailure, SQLAlchemyError) as exc:
        log.warning("the mitigation could not be written now; the worker tries again", extra={
            "event": "worklist-mitigation-pending", "finding": record["finding_id"],
            "error_type": type(exc).__name__})
        record["server_error"] = record.get("server_error") or type(exc).__name__


@bp.get("/worklist")
def worklist_page() -> Response:
    settings = _settings()
    return _page("worklist.html", title="Pharmacist worklist", active="worklist",
                 watch_on=current_app.extensions.get("watch") is not None,
                 outcomes=list(wl.OUTCOMES.items()), tasks=bool(settings.watch_task_owner))
