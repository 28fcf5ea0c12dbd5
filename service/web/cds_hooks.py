"""CDS Hooks 2.0 endpoints: discovery, the three services, feedback (interfaces.md section 4).

Thin: authentication, body reading, then service/cds (call -> CheckRequest), the engine, and
service/output/cards.py. Stateless between calls; every call is recorded in the store.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from sqlalchemy.exc import SQLAlchemyError

from ..cds.discovery import SERVICES, CdsService, discovery, prefetch_templates
from ..cds.feedback import parse_feedback
from ..cds.fetching import fetch_keys
from ..cds.prefetch import gather
from ..cds.request import from_hook, medication_reads, parse_call
from ..cds.review import alerts_not_repeated, from_patient_view
from ..checkrequest import CheckRequest
from ..config import Settings
from ..engine import run_check
from ..errors import Problem, ServiceError
from ..metrics import INPUT_LEFT_OUT
from ..output.cards import Rendered, render_cards
from ..store import record, record_key
from .auth import authenticate_cds, install_jwks
from .body import read_json
from .context import knowledge, now, outbound_deadline, settings
from .context import store as _store

bp = Blueprint("cds_hooks", __name__)
log = logging.getLogger("baclofen_check.cds")
def client_style() -> str:
    """The card style for this call: the JWT issuer's ``style``, else CDS_CLIENT_STYLE."""
    style = g.get("cds_issuer_style")
    return style if isinstance(style, str) else settings().cds_client_style


def _json(data: Any, status: int = 200) -> Response:
    # the standard library, compact: Flask's provider also sorts every object's keys, which no
    # client needs (about 15% of the writing of a card response)
    return Response(json.dumps(data, separators=(",", ":")), status=status,
                    mimetype="application/json")


def _service(service_id: str) -> CdsService:
    service = SERVICES.get(service_id)
    if service is None:
        raise ServiceError(404, [Problem(f"no CDS service {service_id!r}", "not-found")])
    return service


@bp.get("/cds-services")
def list_services() -> Response:
    authenticate_cds()
    return _json(discovery(knowledge()))


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    started = time.perf_counter()   # the one latency start of this call (store.record)
    caller = authenticate_cds()
    service = _service(service_id)
    g.hook = service.hook
    cfg = settings()
    kb = knowledge()
    body = read_json(request, cfg.max_request_bytes)
    call = parse_call(body, service)
    templates = {**prefetch_templates(kb), **medication_reads(call)}
    data = gather(call, templates, lambda c, urls: fetch_keys(
        c, urls, cfg, outbound_deadline()))
    checked = now()
    req = (from_patient_view(call, data, checked, cfg.profile, kb) if service.review
           else from_hook(call, data, checked, cfg.profile))
    _count_left_out(req)
    outcome = run_check(req, kb)
    status = "preliminary" if service.hook == "order-select" else "final"
    rendered = render_cards(req, outcome, kb, status, new_uuid=_card_uuids(call.hook_instance),
                            style=client_style())
    if service.review and cfg.cds_repeat_after_h > 0:   # 0: every card, every time
        rendered = alerts_not_repeated(rendered, lambda ids: _returned(
            service, req, ids, checked - timedelta(hours=cfg.cds_repeat_after_h),
            call.hook_instance))
    _record(service, call.hook_instance, caller, req, rendered, started, checked)
    return _json({"cards": rendered.cards})


def _returned(service: CdsService, req: CheckRequest, ids: Collection[str],
              since: datetime, hook_instance: str) -> Collection[str]:
    """The finding ids this service returned on a card for the patient since ``since`` (by
    other calls than this ``hookInstance``: a retried call gets its cards again)."""
    store = _store()
    if store is None or req.patient is None or not ids:
        return set()
    try:
        return store.returned_findings(f"cds-services/{service.id}", req.patient.ref,
                                       sorted(ids), since, hook_instance)
    except SQLAlchemyError as exc:
        # choice: when the store cannot say what was shown, the cards are shown again (a
        # repeated alert is better than a hidden one)
        log.error("repeat check failed", extra={"event": "repeat-check-failed",
                                                "error_type": type(exc).__name__})
        return set()


_CARD_UUIDS = uuid.UUID("2d0f5a8e-3c1b-4e7a-9f62-7b1c0d4e8a35")


def _card_uuids(hook_instance: str) -> Callable[[], str]:
    """Card and suggestion uuids made from the call itself (its hookInstance and body): a
    retried call, recorded once (issue 17), answers with the same uuids, so the feedback on
    whichever answer the EHR showed joins the recorded cards."""
    seed = f"{hook_instance}:{g.get('body_digest', '')}"
    counter = itertools.count()
    return lambda: str(uuid.uuid5(_CARD_UUIDS, f"{seed}:{next(counter)}"))


def _count_left_out(req: CheckRequest) -> None:
    """Invalid elements the normaliser left out: a CDS answer has no OperationOutcome to name
    them, so they are logged (element paths only, never values) and counted."""
    left_out = [p.expression for p in req.warnings
                if p.code == "informational" and p.expression and " left out" in p.message]
    if not left_out:
        return
    for expression in left_out:
        INPUT_LEFT_OUT.labels(resource=expression.split(".", 1)[0]).inc()
    log.info("invalid elements left out: " + ", ".join(left_out[:20]),
             extra={"event": "input-left-out"})


def _record(service: CdsService, hook_instance: str, caller: str, req: CheckRequest,
            rendered: Rendered, started: float, checked: datetime) -> None:
    """The call in the audit trail (store.record): each finding of each card, read from the
    card's records (the Finding), never from the card's JSON."""
    record(
        _store(), started=started, time=checked, caller=caller,
        endpoint=f"cds-services/{service.id}", hook=service.hook, hook_instance=hook_instance,
        patient_ref=req.patient.ref if req.patient else None,
        order_refs=[it.ref for it in req.orders], knowledge_version=knowledge().version,
        issues=[(f, di, card.card_uuid) for card in rendered.records
                for f, di in card.findings],
        # a retried call (the same hookInstance and body) is recorded once
        record_id=record_key(request.path, hook_instance, g.get("body_digest", "")),
    )


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    authenticate_cds()
    service = _service(service_id)
    g.hook = service.hook
    body = read_json(request, settings().max_request_bytes)
    items = parse_feedback(body)
    store = _store()
    joined = 0
    for item in items:
        if store is not None and store.record_feedback(
                service.id, item.card, item.outcome, item.accepted_suggestions,
                item.override_reason, item.outcome_time, user_comment=item.user_comment):
            joined += 1
    return _json({"received": len(items), "joined": joined})


def register(app: Flask) -> None:
    cfg: Settings = app.config["SETTINGS"]
    install_jwks(app, cfg)
    app.register_blueprint(bp)
