"""NDJSON bounds: every line counts towards MAX_BATCH_LINES (blank ones too), MAX_BATCH_BYTES
bounds the whole body, and a body of newlines costs a worker almost nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flask import Flask

from service import create_app
from service.store import get_store
from tests.support.builders import dosage, order, parameters
from tests.support.checks import AUTH, TOKEN

NDJSON = "application/fhir+ndjson"
LINE = json.dumps(parameters(order(dosage(40))))


def make_app(tmp_path: Path, **extra: Any) -> Flask:
    return create_app({"API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN, "TESTING": True,
                       "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3", **extra})


def post(app: Flask, body: bytes) -> Any:
    return app.test_client().post("/MedicationRequest/$check", data=body,
                                  headers={**AUTH, "Content-Type": NDJSON})


def test_blank_lines_count_towards_max_batch_lines(tmp_path: Path) -> None:
    app = make_app(tmp_path, MAX_BATCH_LINES=3)
    out = [json.loads(x) for x in post(app, f"\n\n\n{LINE}\n".encode()).get_data(
        as_text=True).splitlines()]
    assert [r["resourceType"] for r in out] == ["OperationOutcome"]
    assert out[0]["issue"][0]["code"] == "too-costly"
    assert "more than 3 lines (MAX_BATCH_LINES, blank lines included): line 4" in \
        out[0]["issue"][0]["diagnostics"]
    assert get_store(app).counts()["checks"] == 0


def test_twenty_megabytes_of_newlines_cost_a_worker_almost_nothing(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    body = b"\n" * 20_000_000 + LINE.encode() + b"\n"
    started = time.process_time()
    resp = post(app, body)
    text = resp.get_data(as_text=True)
    spent = time.process_time() - started
    assert resp.status_code == 200
    [last] = [json.loads(x) for x in text.splitlines()]
    assert "MAX_BATCH_LINES" in last["issue"][0]["diagnostics"]
    assert spent < 3, spent  # 51 CPU-seconds before every line counted


def test_a_body_over_max_batch_bytes_is_a_413(tmp_path: Path) -> None:
    app = make_app(tmp_path, MAX_BATCH_BYTES=len(LINE) * 2)
    resp = post(app, (LINE + "\n").encode() * 3)
    assert resp.status_code == 413
    assert resp.get_json()["issue"][0]["code"] == "too-costly"
    assert get_store(app).counts()["checks"] == 0
    ok = post(app, (LINE + "\n").encode())
    assert ok.status_code == 200 and get_store(app).counts()["checks"] == 1
