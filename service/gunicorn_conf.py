"""gunicorn settings used by ``baclofen-check serve``: metrics files of dead workers are
marked so that /metrics stays correct under several workers (prometheus-client
multiprocess mode)."""

from __future__ import annotations

from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
