"""`baclofen-check serve`: real gunicorn with several workers; /metrics adds up across them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.builders import dosage, order, parameters
from tests.support.services import free_port, running_serve

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    env = {**os.environ, "API_REQUIRE_AUTH": "false", "CDS_REQUIRE_JWT": "false",
           "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3"}
    with running_serve(tmp_path, free_port(), env, workers=3, threads=2) as base:
        yield base


def _count(text: str) -> float:
    total = 0.0
    for row in text.splitlines():
        if row.startswith("baclofen_check_requests_total{") and \
                'endpoint="/MedicationRequest/$check"' in row and 'status="200"' in row:
            total += float(row.rsplit(" ", 1)[1])
    return total


def _post_retrying_refusals(url: str, body: object) -> requests.Response:
    """A refused connection (a worker still being forked on a loaded machine) is retried: it
    reached no worker, so it is not counted, and this test is about adding up the counts."""
    for attempt in range(5):
        try:
            return requests.post(url, json=body, timeout=30, headers={
                "Content-Type": "application/fhir+json", "Connection": "close"})
        except requests.ConnectionError:
            if attempt == 4:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def test_metrics_add_up_across_gunicorn_workers(served: str) -> None:
    body = parameters(order(dosage(40)))
    n = 12
    for _ in range(n):
        # a new connection each time, so that the requests spread over the workers
        r = _post_retrying_refusals(served + "/MedicationRequest/$check", body)
        assert r.status_code == 200
    for _ in range(5):  # whichever worker answers, the totals are the same
        text = requests.get(served + "/metrics", timeout=10,
                            headers={"Connection": "close"}).text
        assert _count(text) == n
        assert 'baclofen_check_findings_total{rule="oral.max-daily",severity="high"} ' \
            f'{float(n)}' in text
