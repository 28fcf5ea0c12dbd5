"""``baclofen-check review --engine spark`` gives the embedded engine's result: on the same
generated export (plain NDJSON per type, and gzip patient blocks), with lines that cannot be
read or used added, and the same ``--check-time``, both engines write the same
DetectedIssues, the same OperationOutcomes (file and line), the same orders checked, and the
same summary apart from timings and memory.

One Spark session (``local[2]``) serves every test of the module: the JVM's start dominates.
Its splits are made small (64 KiB), so that a file is read as several splits and the line
numbers are counted across them.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.population import REFERENCE_TEXT, write_export
from service.cli import main
from service.population.spark import session

pytest.importorskip("pyspark", reason="the spark extra: pip install -e '.[spark]'")

N = 120
SEED = 2222
NOT_COMPARED = ("seconds", "patientsPerSecond", "ordersPerSecond", "peakMemory")


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    spark, own = session("local[2]")
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(64 * 1024))
    spark.conf.set("spark.sql.files.openCostInBytes", str(4 * 1024))
    yield spark
    if own:
        spark.stop()


def _spoil(export: Path, big: str) -> None:
    """Lines that cannot be read or used: appended to the end of a large file (beyond its
    first split), and a mixed file with CRLF line ends and a space in its name; files that
    are not read."""
    opener: Any = gzip.open if big.endswith(".gz") else open
    with opener(export / big, "ab") as f:
        f.write(b"\n   \nnot json\n\xff\xfe\xfa\n[1, 2]\n")
        f.write(json.dumps({"resourceType": "Condition", "id": "c-nobody",
                            "code": {"text": "x"}}).encode() + b"\n")
        f.write(b'{"resourceType": "Patient", "id": "p-twice", "gender": "female"}\n')
    mixed = [
        {"resourceType": "Patient", "id": "p-twice", "gender": "male"},
        {"resourceType": "Encounter", "id": "e-1", "subject": {"reference": "Patient/x"}},
        {"resourceType": "MedicationRequest", "id": "mr-ghost", "status": "active",
         "intent": "order", "subject": {"reference": "Patient/ghost"},
         "medicationCodeableConcept": {"text": "baclofen 10 MG Oral Tablet"}},
        {"resourceType": "Observation", "id": "o-1",
         "subject": {"reference": "Group/g"}, "status": "final", "code": {"text": "x"}},
    ]
    lines = [json.dumps(r).encode() for r in mixed]
    (export / "zz extra.ndjson").write_bytes(b"\r\n".join(lines[:2] + [b""] + lines[2:])
                                             + b"\r\n")
    (export / "Encounter.ndjson").write_text(json.dumps(mixed[1]) + "\n")
    (export / "notes.txt").write_text("not part of the export\n")


def _review(export: Path, out: Path, *engine: str) -> dict[str, Any]:
    code = main(["review", "--export-dir", str(export), "--out", str(out), "--check-time",
                 REFERENCE_TEXT, *engine])
    assert code == 0
    return dict(json.loads((out / "summary.json").read_text()))


def _lines(path: Path) -> list[str]:
    return sorted(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("form", ["plain", "by-patient-gzip"])
def test_spark_and_embedded_engines_agree(form: str, spark: Any, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    export = tmp_path / "export"
    by_patient = form == "by-patient-gzip"
    write_export(N, export, SEED, organize_by_patient=by_patient, compress=by_patient)
    big = "output_0000.ndjson.gz" if by_patient else "Observation.ndjson"
    _spoil(export, big)
    if not by_patient:   # a line over the limit (the limit is MAX_REQUEST_BYTES)
        monkeypatch.setenv("MAX_REQUEST_BYTES", "100000")
        with open(export / "Condition.ndjson", "a", encoding="utf-8") as f:
            f.write(json.dumps({"resourceType": "Condition", "id": "c-long",
                                "note": [{"text": "x" * 120_000}]}) + "\n")
    embedded = _review(export, tmp_path / "embedded", "--jobs", "2")
    on_spark = _review(export, tmp_path / "spark", "--engine", "spark",
                       "--spark-master", "local[2]")

    emb, spk = tmp_path / "embedded", tmp_path / "spark"
    issues = _lines(emb / "DetectedIssue.ndjson")
    assert issues == _lines(spk / "DetectedIssue.ndjson")
    assert _lines(emb / "OperationOutcome.ndjson") == _lines(spk / "OperationOutcome.ndjson")
    assert _lines(emb / "orders-checked.txt") == _lines(spk / "orders-checked.txt")
    assert {k: v for k, v in embedded.items() if k not in NOT_COMPARED} == \
        {k: v for k, v in on_spark.items() if k not in NOT_COMPARED}

    # ... and the result is a real one: findings of every severity, the patients read, the
    # lines that could not be read named with their file and line
    assert len(issues) == on_spark["findings"]["total"] > 20
    assert all(on_spark["findings"]["bySeverity"][s] > 0 for s in ("high", "moderate", "low"))
    assert on_spark["patientsRead"] == N + 1        # and Patient/p-twice
    assert on_spark["jobs"] == 2
    assert on_spark["resourcesIgnored"]["Encounter"] >= 1     # in the mixed file
    assert "Encounter.ndjson" in on_spark["filesNotOpened"]
    assert "notes.txt" in on_spark["filesNotOpened"]
    outcome = (spk / "OperationOutcome.ndjson").read_text(encoding="utf-8")
    with (gzip.open if by_patient else open)(export / big, "rb") as f:
        total = sum(1 for _ in f)
    for at, what in ((total - 4, "the line is not JSON"),
                     (total - 3, "the line is not UTF-8 text"),
                     (total - 2, "the line is not a FHIR resource"),
                     (total - 1, "Condition/c-nobody names no patient")):
        assert f"{big} line {at}: {what}" in outcome, (at, what)
    assert "zz extra.ndjson line 1: Patient/p-twice appears 2 times in the export, not all " \
        "the same" in outcome
    assert "zz extra.ndjson line 4: Patient/ghost has active medication orders but no " \
        "Patient resource" in outcome
    assert "zz extra.ndjson line 5: Observation/o-1 names no patient" in outcome
    if not by_patient:
        assert "bytes (MAX_REQUEST_BYTES); not read" in outcome
    assert (spk / "report.html").read_text(encoding="utf-8").count("<svg") == 3


def test_local_workers_run_this_interpreter(spark: Any) -> None:
    """The Python workers of local mode run the interpreter of the command (its virtualenv's
    packages), not the first python on PATH."""
    found = spark.sparkContext.parallelize(range(2), 2).map(lambda _: sys.executable).collect()
    assert set(found) == {sys.executable}


def test_spark_master_needs_the_spark_engine(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "export"
    export.mkdir()
    code = main(["review", "--export-dir", str(export), "--out", str(tmp_path / "out"),
                 "--spark-master", "local[2]"])
    assert code == 2
    assert "--spark-master goes with --engine spark" in capsys.readouterr().err
