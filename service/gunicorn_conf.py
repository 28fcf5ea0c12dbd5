"""gunicorn settings used by ``baclofen-check serve``: metrics files of dead workers are
marked so that /metrics stays correct under several workers (prometheus-client
multiprocess mode)."""

from __future__ import annotations

from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove this run's metrics directory (``baclofen-check serve`` made it)."""
    import os
    import shutil

    from service.metrics import MULTIPROC_ENV

    path = os.environ.get(MULTIPROC_ENV, "")
    if os.path.basename(path).startswith("baclofen-check-metrics-"):
        shutil.rmtree(path, ignore_errors=True)
