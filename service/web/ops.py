"""Operations endpoints: liveness and readiness (interfaces.md section 5)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, json
from sqlalchemy.exc import SQLAlchemyError

from ..metrics import exposition
from ..store import get_store
from ..watch import readiness as watch_readiness
from . import context

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return Response(json.dumps({"status": "ok"}), mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when the knowledge is loaded, the store takes a write (within PROBE_TIMEOUT_S:
    this answers within a second whatever the database does) and took every write of the last
    RECENT_FAILURE_S, and the spool holds less than SPOOL_MAX_BYTES. The reason names the
    first cause; ``store`` and ``spool`` say what was found."""
    try:
        version = context.knowledge().version
    except Exception as exc:  # noqa: BLE001 - any failure to load means not ready
        return Response(json.dumps({"status": "not ready", "reason": type(exc).__name__}),
                        status=503, mimetype="application/json")
    store = get_store(current_app)
    reasons = []
    try:
        store.probe()
        problem = store.guard.problem()
        state = problem or "ok"
        if problem:
            reasons.append(problem)
    except SQLAlchemyError as exc:
        state = f"unreachable ({type(exc).__name__})"
        reasons.append("store unreachable")
    body: dict[str, Any] = {"status": "ok", "knowledge": version, "store": state}
    if store.spool is not None:
        used = store.spool.used_bytes()
        body["spool"] = {"bytes": used, "max_bytes": store.spool.max_bytes,
                         "waiting": store.spool.pending}
        if used > store.spool.max_bytes:
            reasons.append("spool over SPOOL_MAX_BYTES")
    if not reasons:  # the watch (service/watch/): reported, never a 503 of its own
        try:
            watch = watch_readiness(current_app)
        except SQLAlchemyError as exc:
            watch = {"worker": f"unknown ({type(exc).__name__})"}
        if watch is not None:
            body["watch"] = watch
    if reasons:
        body = {"status": "not ready", "reason": reasons[0], **body}
        body["status"] = "not ready"
        return Response(json.dumps(body), status=503, mimetype="application/json")
    return Response(json.dumps(body), mimetype="application/json")


@bp.get("/metrics")
def metrics_page() -> Response:
    """Prometheus metrics (aggregated over gunicorn workers; service/metrics.py)."""
    body, content_type = exposition()
    return Response(body, content_type=content_type)
