"""FHIR endpoints: $check, metadata, OperationDefinition, OpenAPI (interfaces.md section 2)."""

from __future__ import annotations

import json as stdjson
import logging
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, json, request, stream_with_context
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from .. import metrics
from ..assemble.byid import from_server, with_server_patient
from ..batch import check_lines, read_lines
from ..checker import check_result
from ..checkrequest import CheckRequest
from ..config import Settings
from ..engine import run_check
from ..errors import Problem, ServiceError, bad_request, forbidden
from ..fhir_input.fetch import fhir_server_client
from ..fhirjson import JSON
from ..output.fhir import IssueEntry, operation_outcome, render_result
from ..store import get_store, record, record_key
from ..writeback import cancellation_note
from ..writeback import persist as write_back
from . import context
from .auth import authenticate, confined, require_patient
from .body import read_json, require_json_type
from .capability import OPDEF_ID, capability_statement, openapi, operation_definition
from .errors import FHIR_JSON

bp = Blueprint("fhir", __name__)
log = logging.getLogger("baclofen_check.fhir")
ENDPOINT_CHECK = "MedicationRequest/$check"
NDJSON = "application/fhir+ndjson"


def settings() -> Settings:
    s: Settings = current_app.config["SETTINGS"]
    return s


def fhir_response(resource: object, status: int = 200) -> Response:
    return Response(stdjson.dumps(resource, separators=(",", ":")), status=status,
                    mimetype=FHIR_JSON)


@bp.post("/MedicationRequest/$check")
def check() -> Response:
    started = time.perf_counter()   # the one latency start of this request (store.record)
    cfg = settings()
    caller = authenticate(request, cfg)
    profile = _profile(cfg)
    if require_json_type(request, (NDJSON,)) == NDJSON:
        if confined() is not None:
            raise forbidden("a batch spans patients: a patient/ access token cannot send "
                            "one (it needs system/ or user/ scopes)")
        return check_ndjson(cfg, caller, profile)
    body = read_json(request, cfg.max_request_bytes)
    now = context.now()
    if cfg.fhir_server_url:
        body = with_server_patient(body, fhir_server_client(cfg),
                                   context.outbound_deadline())
    result, req, _outcome = check_result(body, now, profile, context.knowledge())
    if confined() is not None:
        require_patient(req.patient.resource.get("id") if req.patient else None,
                        "the request's Patient")
    record_check(ENDPOINT_CHECK, caller, now, req, result.issues, started)
    return fhir_response(result.bundle)


def check_ndjson(cfg: Settings, caller: str, profile: str) -> Response:
    """One result per input line, streamed in input order (service/batch.py).

    Bounded: MAX_REQUEST_BYTES per line, MAX_BATCH_LINES lines (blank ones too) and
    MAX_BATCH_BYTES for the whole body; a client that goes away stops the work (its socket is
    looked at every CLIENT_CHECK_LINES lines, and a write to it fails)."""
    request.max_content_length = cfg.max_batch_bytes  # a larger Content-Length is a 413 here
    kb = context.knowledge()
    stream = request.stream
    client = request.environ.get("gunicorn.socket")

    def generate() -> Iterator[bytes]:
        lines = read_lines(stream, cfg.max_request_bytes)
        clock = _Clock(context.now)
        looked = 0
        try:
            for line in check_lines(lines, clock.now, profile, kb, cfg.max_batch_lines):
                if line.request is not None:
                    record_check(ENDPOINT_CHECK + " (ndjson)", caller, clock.last,
                                 line.request, line.issues, clock.started,
                                 f"{line.number}:{line.digest}")
                    metrics.BATCH_LINES.labels("checked").inc()
                else:
                    metrics.BATCH_LINES.labels("error").inc()
                yield json.dumps(line.result).encode() + b"\n"
                if line.seen - looked >= CLIENT_CHECK_LINES:
                    looked = line.seen
                    if not client_gone(client):
                        continue
                    log.info("batch client went away", extra={"event": "batch-client-gone"})
                    return
        except RequestEntityTooLarge:
            yield json.dumps(operation_outcome([Problem(
                f"the batch body is larger than MAX_BATCH_BYTES ({cfg.max_batch_bytes} bytes); "
                "the rest was not read or checked", "too-costly")])).encode() + b"\n"
        except (ClientDisconnected, OSError):
            log.info("batch client went away", extra={"event": "batch-client-gone"})

    return Response(stream_with_context(generate()), mimetype=NDJSON)


CLIENT_CHECK_LINES = 256


def client_gone(sock: Any) -> bool:
    """The client closed its connection (or reset it): its socket reads as ended."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


class _Clock:
    """The check time (from the app's clock) and start of each line (a fresh time per
    line)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.last = clock()
        self.started = time.perf_counter()

    def now(self) -> datetime:
        self.last = self.clock()
        self.started = time.perf_counter()
        return self.last


def record_check(endpoint: str, caller: str, now: datetime, req: CheckRequest,
                 issues: list[IssueEntry], started: float, line: str = "") -> None:
    """Record one answered check in the audit store (store.record: one transaction, or the
    spool when the store cannot take it). A retried call (the same X-Request-ID and body;
    for a batch line also its number and text) is recorded once."""
    record(get_store(current_app), started=started, time=now, caller=caller,
           endpoint=endpoint, patient_ref=req.patient.ref if req.patient else None,
           order_refs=[it.ref for it in req.orders], knowledge_version=context.knowledge().version,
           issues=[(e.finding, e.resource, None) for e in issues],
           record_id=record_key(request.path, g.get("request_id", ""),
                                g.get("body_digest", ""), line))


@bp.post("/MedicationRequest/<order_id>/$check")
def check_by_id(order_id: str) -> Response:
    """Check an order that lives on FHIR_SERVER_URL; ``?persist=true`` writes the
    DetectedIssues back (service/writeback.py)."""
    started = time.perf_counter()   # the one latency start of this request (store.record)
    cfg = settings()
    persist_arg = request.args.get("persist", "false").lower()
    if persist_arg not in {"true", "false"}:
        raise bad_request("persist must be true or false")
    persist = persist_arg == "true"
    caller = authenticate(request, cfg, write=persist)
    profile = _profile(cfg)
    if cfg.fhir_server_url is None:
        raise ServiceError(422, [Problem(
            "checking an order by id needs FHIR_SERVER_URL, which is not configured",
            "not-supported")])
    now = context.now()
    deadline = context.outbound_deadline()
    client = fhir_server_client(cfg)
    kb = context.knowledge()
    req = from_server(client, order_id, deadline, now, profile, kb,
                      check_patient=lambda pid: require_patient(
                          pid, f"the order's subject Patient/{pid}"))
    outcome = run_check(req, kb)
    result = render_result(req, outcome, kb)
    if persist:
        written = write_back([(e.finding.id, e.entry) for e in result.issues],
                             f"MedicationRequest/{order_id}", client,
                             get_store(current_app), deadline, now)
        note = cancellation_note(written)
        if note is not None:
            add_note(result.bundle, note)
    record_check("MedicationRequest/{id}/$check", caller, now, req, result.issues, started)
    return fhir_response(result.bundle)


def add_note(bundle: JSON, note: Problem) -> None:
    """Add an issue to the result Bundle's OperationOutcome (creating it when absent)."""
    for entry in bundle["entry"]:
        if entry["resource"].get("resourceType") == "OperationOutcome":
            entry["resource"]["issue"].append(operation_outcome([note])["issue"][0])
            return
    bundle["entry"].append({"fullUrl": f"urn:uuid:{uuid.uuid4()}",
                            "resource": operation_outcome([note])})


def _profile(cfg: Settings) -> str:
    profile = request.args.get("profile", cfg.profile)
    if profile not in {"us", "uk"}:
        raise bad_request("the profile query parameter must be us or uk")
    return profile


@bp.get("/metadata")
def metadata() -> Response:
    cfg = settings()
    kb = context.knowledge()
    return fhir_response(capability_statement(cfg.public_base_url, kb.version, "2026-11-25",
                                              cfg))


@bp.get(f"/OperationDefinition/{OPDEF_ID}")
def opdef() -> Response:
    return fhir_response(operation_definition(settings().public_base_url))


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(json.dumps(openapi(settings().public_base_url, context.knowledge().version)),
                    mimetype="application/json")
