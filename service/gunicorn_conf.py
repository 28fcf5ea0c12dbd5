"""gunicorn settings used by ``baclofen-check serve``: each worker runs one made-up check and
freezes what it loaded before serving (no slow first call, shorter garbage-collection pauses),
and metrics files of dead workers are marked so that /metrics stays correct under several
workers (prometheus-client multiprocess mode)."""

from __future__ import annotations

import gc
import os
import shutil
from typing import Any

from prometheus_client import multiprocess


def post_worker_init(worker: Any) -> None:
    """The app is loaded: run one made-up check (service/warmup.py: the first check in a
    process costs about 130 ms, the next ones about 3), then move everything made so far
    (modules, knowledge, models) out of the garbage collector's reach. A full collection
    otherwise walks those ~97,000 objects: 30 ms in one quiet process, once every few thousand
    order-sign calls, a pause that lands in the slowest answers; frozen, about 0.6 ms."""
    # lazy: gunicorn's master reads this file and must not import the app (each worker does)
    from service.warmup import app_profile, warm_up

    app: Any = getattr(worker, "wsgi", None)
    profile = app_profile(app)
    if profile is not None:  # our app (bench/run.py serves a bare one the same way)
        warm_up(app.extensions["knowledge"], profile)  # create_app's, read once
    gc.freeze()


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove this run's metrics directory (``baclofen-check serve`` made it)."""
    from service.metrics import MULTIPROC_ENV  # lazy: as above, the master imports no app

    path = os.environ.get(MULTIPROC_ENV, "")
    if os.path.basename(path).startswith("baclofen-check-metrics-"):
        shutil.rmtree(path, ignore_errors=True)
