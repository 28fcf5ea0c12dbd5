"""Operations endpoints: liveness and readiness (interfaces.md section 5)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, json

from ..knowledge import load
from ..store import get_store

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return Response(json.dumps({"status": "ok"}), mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    try:
        version = load().version
    except Exception as exc:  # noqa: BLE001 - any failure to load means not ready
        return Response(json.dumps({"status": "not ready", "reason": type(exc).__name__}),
                        status=503, mimetype="application/json")
    if not get_store(current_app).ping():
        return Response(json.dumps({"status": "not ready", "reason": "store unreachable",
                                    "knowledge": version}),
                        status=503, mimetype="application/json")
    return Response(json.dumps({"status": "ok", "knowledge": version, "store": "ok"}),
                    mimetype="application/json")


@bp.get("/metrics")
def metrics_page() -> Response:
    """Prometheus metrics (aggregated over gunicorn workers; service/metrics.py)."""
    from ..metrics import exposition

    body, content_type = exposition()
    return Response(body, content_type=content_type)
