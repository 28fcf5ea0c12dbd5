"""Prometheus metrics of the watch (issue 19). The receiver's count in the web processes; the
worker's (re-checks, latency, queue depth) in the ``watch work`` process, which serves them
with ``--metrics-port`` (the same names on every host; Prometheus sums them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NOTIFICATIONS = Counter(
    "baclofen_check_watch_notifications_total",
    "Subscription notifications received, by kind (resource, bundle, bundle-ids, ping, "
    "handshake, heartbeat, refused, unstored)", ["kind"])
QUEUE_DEPTH = Gauge(
    "baclofen_check_watch_queue_depth", "Watch queue entries by state (read by the worker)",
    ["state"], multiprocess_mode="mostrecent")
RECHECKS = Counter(
    "baclofen_check_watch_rechecks_total", "Patient re-checks by outcome (done, retry, failed)",
    ["outcome"])
CATCH_UP_QUEUED = Counter(
    "baclofen_check_watch_catch_up_queued_total",
    "Patients queued by a catch-up (changes no notification brought)")
SUBSCRIPTIONS_REREQUESTED = Counter(
    "baclofen_check_watch_subscriptions_rerequested_total",
    "Subscriptions found in error on the server and requested again")
LATENCY = Histogram(
    "baclofen_check_watch_event_to_writeback_seconds",
    "From the first event of a re-check (its receipt) until its DetectedIssues were written "
    "back and its result recorded",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900))
