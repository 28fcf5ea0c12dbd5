"""Surveillance after the order (issue 19): Subscriptions on FHIR_SERVER_URL tell the receiver
what changed, a durable per-patient queue in the store's database holds the re-checks, and
the worker re-checks the patient's active baclofen therapy with write-back.

- service/watch/subscriptions.py: criteria from the prefetch templates; subscribe, remove,
  re-request errored Subscriptions; catch-up by ``_lastUpdated``
- service/watch/receiver.py: ``POST /subscriptions/notify``, ``PUT /subscriptions/notify/
  {type}/{id}``
- service/watch/queue.py: the tables (queue, seen versions, state, results for the worklist)
- service/watch/worker.py: the re-check and the worker loop
- service/watch/commands.py: ``baclofen-check watch subscribe|work|catch-up``
- service/watch/worklist.py: the pharmacist worklist, its resolutions and FHIR Tasks (issue
  20; served by service/web/worklist.py); service/watch/topics.py: topic-based Subscriptions
  (Subscriptions Backport IG) and signed notifications

Nothing here is imported by the rest of the service unless the watch is used (only
service/config/watch.py, by service/config/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..clock import app_clock

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Settings
    from .queue import WatchStore


def register(app: Flask) -> None:
    """With WATCH_NOTIFY_TOKEN (or WATCH_NOTIFY_HMAC_SECRET) set: the watch and worklist
    tables (created when missing) and the receiver. Without it the receiver and the worklist
    (service/web/worklist.py, registered by create_app) answer 404 (off) and no table is
    made."""
    from ..store import get_store  # lazy: the watch loads only when used (see above)
    from .receiver import bp  # lazy: the watch loads only when used (see above)

    settings: Settings = app.config["SETTINGS"]
    if settings.watch_notify_token or settings.watch_notify_hmac_secret:
        from . import worklist  # lazy: the watch loads only when used (see above)
        from .queue import WatchStore  # lazy: the watch loads only when used (see above)

        app.extensions["watch"] = worklist.create(WatchStore(get_store(app)))
    app.register_blueprint(bp)


def readiness(app: Flask) -> dict[str, Any] | None:
    """For /readyz when the watch is configured: the newest worker heartbeat, and ``stale``
    when no worker has run within 2 x WATCH_CHECK_S. None when the watch is off.

    choice: a stale worker is reported, not made a 503: the same replicas answer CDS Hooks
    and receive notifications, and taking them out of a load balancer would stop both while
    the queue (and the catch-up) keeps every event for the worker's return."""
    ws: WatchStore | None = app.extensions.get("watch")
    if ws is None:
        return None
    settings: Settings = app.config["SETTINGS"]
    beats = ws.heartbeats()
    now = app_clock(app)()
    newest = max((t for _, t in beats), default=None)
    age = None if newest is None else round((now - newest).total_seconds(), 1)
    fresh = age is not None and age <= 2 * settings.watch_check_s
    return {"worker": "ok" if fresh else "stale", "worker_last_ran_s_ago": age,
            "queue": ws.depth()}
