"""JSON-lines logs with a request id. Never tokens or clinical content: only what is listed."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from datetime import UTC, datetime

from flask import Flask, Response, g, request

_SAFE_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "error_type", "event",
                # references only, for a lost audit record to be reconciled (service/spool.py)
                "record_id", "hook_instance", "patient_ref", "order_refs")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _SAFE_FIELDS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        return json.dumps(data)


def configure_logging() -> None:
    root = logging.getLogger("baclofen_check")
    if any(getattr(h, "_baclofen", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._baclofen = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def install_request_logging(app: Flask) -> None:
    log = logging.getLogger("baclofen_check.http")

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _safe_id(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _finish(resp: Response) -> Response:
        resp.headers["X-Request-ID"] = g.get("request_id", "")
        log.info("request", extra={
            "request_id": g.get("request_id"),
            "method": request.method,
            "path": request.path,   # paths hold resource ids at most, never query strings
            "status": resp.status_code,
            "duration_ms": round((time.perf_counter() - g.get("started", time.perf_counter()))
                                 * 1000, 2),
        })
        return resp


def _safe_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value)
