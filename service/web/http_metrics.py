"""Every HTTP request counted with its latency (service/metrics.py holds the metrics)."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from ..metrics import LATENCY, REQUESTS


def install(app: Flask) -> None:
    """Count every request and its latency per endpoint (the URL rule, never the raw path)
    and hook (``g.hook``, set by the CDS Hooks endpoints; empty elsewhere)."""

    @app.before_request
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _finish(resp: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        hook = str(g.get("hook") or "")
        started = g.get("metrics_started", time.perf_counter())
        REQUESTS.labels(rule, hook, str(resp.status_code)).inc()
        LATENCY.labels(rule, hook).observe(time.perf_counter() - started)
        return resp
