"""NDJSON batches: the streamed HTTP endpoint and the CLI, plus the report command and /metrics."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.cli import main
from service.store import get_store
from tests.support.builders import dosage, order, parameters, patient, rule_ids
from tests.support.checks import AUTH, TOKEN, WRITE_TOKEN
from tests.support.fhir_validate import validate

NDJSON = "application/fhir+ndjson"


def line(dose: float, oid: str = "ord-1") -> str:
    return json.dumps(parameters(order(dosage(dose), id=oid)))


def post_ndjson(client: FlaskClient, text: str | bytes) -> Any:
    return client.post("/MedicationRequest/$check", data=text,
                       headers={**AUTH, "Content-Type": NDJSON})


def results(resp: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in resp.get_data(as_text=True).splitlines()]


def test_ndjson_one_result_per_line_in_order_with_bad_lines(client: FlaskClient,
                                                           app: Flask) -> None:
    body = "\n".join([
        line(40, "a"),                       # 120 mg/day: oral.max-daily
        "{not json",
        "",                                  # blank lines are skipped
        json.dumps({"resourceType": "Patient", "id": "x"}),
        line(5, "b"),
    ]) + "\n"
    resp = post_ndjson(client, body)
    assert resp.status_code == 200
    assert resp.mimetype == NDJSON
    out = results(resp)
    assert [r["resourceType"] for r in out] == ["Bundle", "OperationOutcome",
                                                "OperationOutcome", "Bundle"]
    for r in out:
        validate(r)
    assert "oral.max-daily" in rule_ids(out[0])
    assert out[0]["entry"][0]["resource"]["implicated"][0]["reference"] == \
        "MedicationRequest/a"
    assert out[1]["issue"][0]["diagnostics"].startswith("line 2: malformed JSON")
    assert out[2]["issue"][0]["diagnostics"].startswith("line 3: a Patient cannot be checked")
    assert "oral.max-daily" not in rule_ids(out[3])
    assert get_store(app).counts()["checks"] == 2  # each checked line is recorded


def test_ndjson_line_over_max_request_bytes(tmp_path: Path) -> None:
    app = create_app({"API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN, "TESTING": True,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3",
                      "MAX_REQUEST_BYTES": 3000})
    long_line = json.dumps(parameters(order(dosage(10), id="long", note=[
        {"text": "x" * 5000}])))
    body = "\n".join([line(10, "a"), long_line, line(10, "c")])
    out = results(post_ndjson(app.test_client(), body))
    assert [r["resourceType"] for r in out] == ["Bundle", "OperationOutcome", "Bundle"]
    assert out[1]["issue"][0]["code"] == "too-costly"
    assert out[1]["issue"][0]["diagnostics"].startswith("line 2: the line is")


def test_ndjson_more_than_max_batch_lines_ends_with_an_outcome(tmp_path: Path) -> None:
    app = create_app({"API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN, "TESTING": True,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3",
                      "MAX_BATCH_LINES": 2})
    body = "\n".join(line(10, f"o{n}") for n in range(4))
    out = results(post_ndjson(app.test_client(), body))
    assert [r["resourceType"] for r in out] == ["Bundle", "Bundle", "OperationOutcome"]
    assert out[2]["issue"][0]["code"] == "too-costly"
    assert "more than 2 lines" in out[2]["issue"][0]["diagnostics"]


def test_ndjson_needs_authentication(client: FlaskClient) -> None:
    resp = client.post("/MedicationRequest/$check", data=line(10),
                       headers={"Content-Type": NDJSON})
    assert resp.status_code == 401


def test_wrong_media_type_names_ndjson(client: FlaskClient) -> None:
    resp = client.post("/MedicationRequest/$check", data="x",
                       headers={**AUTH, "Content-Type": "text/plain"})
    assert resp.status_code == 415
    assert NDJSON in resp.get_json()["issue"][0]["diagnostics"]


# --- CLI ------------------------------------------------------------------------------------

def test_cli_ndjson_prints_one_line_each_and_a_summary(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    path = tmp_path / "batch.ndjson"
    path.write_text("\n".join([line(40, "a"), "[1, 2", line(5, "b"), ""]) + "\n")
    code = main(["check", str(path), "--check-time", "2026-11-25T10:00:00Z"])
    captured = capsys.readouterr()
    out = [json.loads(x) for x in captured.out.splitlines()]
    assert code == 1  # one line could not be checked
    assert [r["resourceType"] for r in out] == ["Bundle", "OperationOutcome", "Bundle"]
    high = sum(1 for e in out[0]["entry"] if e["resource"].get("severity") == "high")
    assert high >= 1
    summary = captured.err.strip().splitlines()[-1]
    assert summary.startswith("baclofen-check: checked 2, errors 1, findings: high ")
    assert f"high {high}," in summary


def test_ndjson_lines_are_checked_in_constant_memory(tmp_path: Path) -> None:
    """Peak memory does not grow with the lines read: between line 1,000 and line 5,000 it
    stays within a few MB (the 100,000-line measurement is in bench/ndjson.py)."""
    one = line(10, "a")
    path = tmp_path / "big.ndjson"
    with path.open("w") as f:
        for _ in range(5_000):
            f.write(one + "\n")
    script = (
        "import resource, sys\n"
        "from service.batch import Summary, check_lines, read_lines\n"
        "from service.knowledge import load\n"
        "from datetime import UTC, datetime\n"
        "kb = load(); s = Summary()\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    for _r in check_lines(read_lines(f, None), lambda: datetime.now(UTC), 'us', kb,\n"
        "                          None, s):\n"
        "        if _r.number == 1000: base = resource.getrusage(resource.RUSAGE_SELF)"
        ".ru_maxrss\n"
        "        if _r.number == 5000: break\n"
        "print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, s.checked)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                          text=True, check=True, cwd=Path(__file__).parents[2])
    base, peak, checked = (int(x) for x in proc.stdout.split())
    assert checked == 5000
    assert peak - base < 20_000  # kB: no growth with the lines read


# --- report ---------------------------------------------------------------------------------

def test_report_counts_match_the_recorded_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/report.sqlite3"
    app = create_app({"API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN, "TESTING": True,
                      "DATABASE_URL": url})
    client = app.test_client()
    for dose in (40, 40, 10):
        body = parameters(order(dosage(dose)), pat=patient())
        assert client.post("/MedicationRequest/$check", json=body, headers={
            **AUTH, "Content-Type": "application/fhir+json"}).status_code == 200
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(["report"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["rule", "fired", "accepted", "overridden"]
    row = next(r for r in out if r.startswith("oral.max-daily "))
    assert row.split()[1:4] == ["2", "0", "0"]
    assert row.split()[5] == "ms"


def test_report_on_an_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/empty.sqlite3")
    assert main(["report"]) == 0
    assert capsys.readouterr().out == "no checks recorded\n"


# --- metrics --------------------------------------------------------------------------------

def _sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for row in text.splitlines():
        if row.startswith(name + "{") and all(f'{k}="{v}"' in row for k, v in labels.items()):
            return float(row.rsplit(" ", 1)[1])
    return 0.0 if want else 0.0


def test_metrics_count_requests_findings_and_feedback(client: FlaskClient, app: Flask) -> None:
    before = client.get("/metrics").get_data(as_text=True)
    body = parameters(order(dosage(40)))
    for _ in range(2):
        client.post("/MedicationRequest/$check", json=body,
                    headers={**AUTH, "Content-Type": "application/fhir+json"})
    get_store(app).record_feedback("svc", "not-recorded", "overridden", [], None,
                                   __import__("datetime").datetime.now(
                                       __import__("datetime").UTC))
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    after = resp.get_data(as_text=True)
    endpoint = "/MedicationRequest/$check"
    assert _sample(after, "baclofen_check_requests_total", endpoint=endpoint, status="200") - \
        _sample(before, "baclofen_check_requests_total", endpoint=endpoint, status="200") == 2
    assert _sample(after, "baclofen_check_request_seconds_count", endpoint=endpoint) - \
        _sample(before, "baclofen_check_request_seconds_count", endpoint=endpoint) == 2
    assert _sample(after, "baclofen_check_findings_total", rule="oral.max-daily",
                   severity="high") - _sample(before, "baclofen_check_findings_total",
                                              rule="oral.max-daily", severity="high") == 2
    assert _sample(after, "baclofen_check_feedback_total", rule="unknown",
                   outcome="overridden") - _sample(before, "baclofen_check_feedback_total",
                                                   rule="unknown", outcome="overridden") == 1
    assert "baclofen_check_outbound_fhir_calls_total" in after
    assert WRITE_TOKEN not in after and TOKEN not in after


def test_cli_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "batch.ndjson"
    path.write_text("\n".join(line(10, f"o{n}") for n in range(450)) + "\n")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "check", str(path)],
                            stdout=subprocess.DEVNULL, stderr=slave,
                            cwd=Path(__file__).parents[2])
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(master)
    err = b"".join(chunks).decode()
    assert "[" in err and "] " in err and "400 lines" in err
    assert "checked 450, errors 0" in err
    assert proc.returncode == 0
