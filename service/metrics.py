"""Prometheus metrics (interfaces.md section 5).

Under gunicorn with several workers ``baclofen-check serve`` sets ``PROMETHEUS_MULTIPROC_DIR``
to a fresh directory before the workers start: every worker then writes its samples there and
``/metrics`` aggregates them (prometheus-client multiprocess mode). Without that variable
(tests, a single process) the default in-process registry is used.

No Flask here (the store and the workers count too): the HTTP request counting is
service/web/http_metrics.py.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "baclofen_check_requests_total", "HTTP requests answered",
    ["endpoint", "hook", "status"])
LATENCY = Histogram(
    "baclofen_check_request_seconds", "Time to answer an HTTP request",
    ["endpoint", "hook"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
FINDINGS = Counter(
    "baclofen_check_findings_total", "Findings returned", ["rule", "severity"])
FEEDBACK = Counter(
    "baclofen_check_feedback_total", "CDS Hooks feedback received", ["rule", "outcome"])
OUTBOUND = Counter(
    "baclofen_check_outbound_fhir_calls_total", "Outbound FHIR calls made", ["operation"])
OUTBOUND_FAILURES = Counter(
    "baclofen_check_outbound_fhir_failures_total", "Outbound FHIR calls that failed",
    ["operation", "reason"])
AUDIT_FAILURES = Counter(
    "baclofen_check_audit_failures_total",
    "Checks answered that the store did not take: spooled (replayed later) or lost (neither "
    "the store nor the spool took them)", ["outcome"])
AUDIT_REPLAYED = Counter(
    "baclofen_check_audit_replayed_total", "Spooled check records written to the store")
INPUT_LEFT_OUT = Counter(
    "baclofen_check_input_left_out_total",
    "Invalid elements of orders or patients that no rule needs, left out instead of refusing "
    "the call", ["resource"])
BATCH_LINES = Counter(
    "baclofen_check_batch_lines_total", "NDJSON lines processed", ["result"])


def count_findings(findings: list[tuple[str, str]]) -> None:
    """Count (rule id, severity) pairs."""
    for rule, severity in findings:
        FINDINGS.labels(rule, severity).inc()


def exposition() -> tuple[bytes, str]:
    """The metrics page: aggregated over workers in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
