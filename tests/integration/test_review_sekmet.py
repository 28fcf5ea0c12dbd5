"""``baclofen-check review --fhir-server`` against the real sekmet FHIR server: its ``$export``
(202 + Retry-After, then the manifest and the files, with the bearer token) reviewed gives the
same findings as the by-id check of each order; a Group export reviews the Group's patients;
``--since`` reviews the whole record of each patient changed since then.

Kept small: sekmet builds each export in memory.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from bench.population import population, referenced_medications
from service.cli import main
from service.knowledge import load
from service.population.bulk import retry_after, type_filter
from tests.support.checks import AUTH, make_app
from tests.support.services import Sekmet

N = 14
SEED = 777
PREFIX = "rvw-"


def _records() -> list[list[dict[str, Any]]]:
    out = []
    for record in population(N, SEED):
        text = json.dumps(record + referenced_medications(record))
        text = text.replace('"p0', f'"{PREFIX}p0').replace("/p0", f"/{PREFIX}p0")
        out.append(json.loads(text))
    return out


def _baclofen_orders(record: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in record if r["resourceType"] == "MedicationRequest"
            and r["status"] == "active" and ("baclofen" in json.dumps(r).lower()
                                            or "lioresal" in json.dumps(r).lower())]


@pytest.fixture(scope="module")
def loaded(sekmet: Sekmet) -> list[list[dict[str, Any]]]:
    records = _records()
    for record in records:
        for resource in record:
            sekmet.put(resource)
    return records


def _by_id(client: FlaskClient, records: list[list[dict[str, Any]]]
           ) -> dict[str, set[tuple[str, str, str]]]:
    found: dict[str, set[tuple[str, str, str]]] = {}
    for record in records:
        pid = record[0]["id"]
        found[pid] = set()
        for oid in _baclofen_orders(record):
            resp = client.post(f"/MedicationRequest/{oid}/$check", headers=AUTH)
            assert resp.status_code == 200, resp.get_data(as_text=True)
            found[pid] |= _keys(e["resource"] for e in resp.get_json()["entry"])
    return found


def _keys(resources: Any) -> set[tuple[str, str, str]]:
    return {(r["identifier"][1]["value"], r["identifier"][0]["value"], r["severity"])
            for r in resources if r["resourceType"] == "DetectedIssue"}


def _reviewed(out: Path) -> dict[str, set[tuple[str, str, str]]]:
    found: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    with (out / "DetectedIssue.ndjson").open() as f:
        for line in f:
            issue = json.loads(line)
            found[issue["patient"]["reference"].split("/", 1)[1]] |= _keys([issue])
    return found


@pytest.fixture
def env(sekmet: Sekmet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("FHIR_ALLOWLIST", "FHIR_SERVER_AUTH", "BACLOFEN_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FHIR_SERVER_URL", sekmet.base_url)
    monkeypatch.setenv("FHIR_SERVER_TOKEN", sekmet.token)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/audit.sqlite3")


def test_export_review_agrees_with_the_by_id_checks(loaded: list[list[dict[str, Any]]],
                                                    sekmet: Sekmet, env: None,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["review", "--fhir-server", sekmet.base_url, "--out", str(out),
                 "--jobs", "1"]) == 0
    client = make_app(tmp_path, sekmet.base_url, sekmet.token).test_client()
    expected = _by_id(client, loaded)
    got = _reviewed(out)
    assert sum(1 for pid in expected if _baclofen_orders(
        next(r for r in loaded if r[0]["id"] == pid))) >= 3
    for pid, keys in expected.items():
        assert got.get(pid, set()) == keys, pid
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert {o["type"] for o in manifest["output"]} <= {
        "Patient", "MedicationRequest", "MedicationStatement", "MedicationDispense",
        "Medication", "Observation", "Condition", "Procedure"}
    # _typeFilter: only the Observations the rules read came
    codes = set()
    for path in (out / "export").glob("Observation_*.ndjson"):
        for line in path.read_text().splitlines():
            codes |= {c["code"] for c in json.loads(line)["code"]["coding"]}
    assert codes and codes <= set(type_filter(load()).split("=", 1)[1].replace(
        "http://loinc.org|", "").split("%2C"))


def test_group_export_reviews_the_group_patients(loaded: list[list[dict[str, Any]]],
                                                 sekmet: Sekmet, env: None,
                                                 tmp_path: Path) -> None:
    members = [r[0]["id"] for r in loaded if _baclofen_orders(r)][:3]
    sekmet.put({"resourceType": "Group", "id": "rvw-group", "type": "person", "actual": True,
                "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members]})
    out = tmp_path / "out"
    assert main(["review", "--fhir-server", sekmet.base_url, "--group", "rvw-group",
                 "--out", str(out), "--jobs", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patientsRead"] == 3
    assert summary["source"].endswith("/Group/rvw-group")
    assert set(_reviewed(out)) <= set(members)


def test_since_reviews_the_whole_record_of_each_changed_patient(
        loaded: list[list[dict[str, Any]]], sekmet: Sekmet, env: None,
        tmp_path: Path) -> None:
    target = next(r for r in loaded if _baclofen_orders(r)
                  and any(x["resourceType"] == "Observation" for x in r))
    pid, oid = target[0]["id"], _baclofen_orders(target)[0]
    time.sleep(0.01)
    now = datetime.now(UTC)
    since = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    time.sleep(0.01)
    changed = json.loads(sekmet.get(f"MedicationRequest/{oid}").text)
    changed.pop("meta", None)
    changed["note"] = [{"text": "reviewed by pharmacy"}]
    sekmet.put(changed)
    out = tmp_path / "out"
    assert main(["review", "--fhir-server", sekmet.base_url, "--since", since, "--out",
                 str(out), "--jobs", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patientsRead"] == 1            # only the patient changed since then
    # its whole record was read: Patient, labs and orders, not only the changed order
    assert summary["resourcesRead"].get("Observation", 0) >= 1
    client = make_app(tmp_path, sekmet.base_url, sekmet.token).test_client()
    assert _reviewed(out).get(pid, set()) == _by_id(client, [target])[pid]


def test_retry_after_is_honoured_in_both_forms() -> None:
    assert retry_after("3") == 3
    assert retry_after(None) == 1
    assert retry_after("120") == 60          # at most a minute between polls
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0   # a date in the past
    assert retry_after("soon") == 1


def test_a_server_outside_the_allow_list_is_never_called(env: None, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    assert main(["review", "--fhir-server", "http://127.0.0.1:9/fhir", "--out",
                 str(tmp_path / "o")]) == 2
    assert "not under FHIR_ALLOWLIST" in capsys.readouterr().err


def test_persist_writes_each_finding_once_in_batches(loaded: list[list[dict[str, Any]]],
                                                     sekmet: Sekmet, env: None,
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    members = [r[0]["id"] for r in loaded if _baclofen_orders(r)][:4]
    sekmet.put({"resourceType": "Group", "id": "rvw-persist", "type": "person",
                "actual": True,
                "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members]})
    args = ["review", "--fhir-server", sekmet.base_url, "--group", "rvw-persist", "--persist",
            "--jobs", "1"]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    found = _reviewed(tmp_path / "first")
    total = sum(len(v) for v in found.values())
    assert total > 0
    assert f"{total} DetectedIssues written, 0 already there" in capsys.readouterr().err
    fid = next(iter(next(iter(found.values()))))[0]
    stored = sekmet.get(f"DetectedIssue/bc-{fid}")
    assert stored.status_code == 200 and stored.json()["status"] == "final"
    # a second run writes nothing new (the store remembers what was written)
    assert main([*args, "--out", str(tmp_path / "second")]) == 0
    assert f"0 DetectedIssues written, {total} already there" in capsys.readouterr().err
