"""``baclofen-check review`` on a generated Bulk Data export agrees, patient by patient, with
the native ``POST /MedicationRequest/$check`` of each patient's record (review mode): plain
NDJSON per type, gzip, and patient-organised blocks. What cannot be read is named with its
file and line. The report opens in headless Chromium with its charts.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from bench.population import (
    REFERENCE,
    REFERENCE_TEXT,
    population,
    referenced_medications,
    write_export,
)
from service.checker import check_body
from service.checkrequest import CONTEXT_TYPES
from service.cli import main
from service.errors import ServiceError
from service.knowledge import load
from service.population.review import progress_bar
from tests.support.browser import OUTPUT, browser, wait  # noqa: F401 - the browser fixture
from tests.support.fhir_validate import validate

N = 150
SEED = 4242
READ = CONTEXT_TYPES | {"Patient"}


@pytest.fixture(scope="module")
def native() -> dict[str, Any]:
    """Per patient: the DetectedIssues and the notes of the native check of its record (the
    Bundle through ``checker.check_body``, which ``POST /MedicationRequest/$check`` calls),
    or None when the record has nothing to check (422)."""
    expected: dict[str, Any] = {}
    for record in population(N, SEED):
        pid = record[0]["id"]
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": r} for r in record + referenced_medications(record)
            if r["resourceType"] in READ]}
        try:
            result, req, _outcome = check_body(bundle, REFERENCE, "us", load())
        except ServiceError as exc:
            assert exc.status == 422, exc
            expected[pid] = None
            continue
        assert req.mode == "review"
        issues = [e["resource"] for e in result["entry"]
                  if e["resource"]["resourceType"] == "DetectedIssue"]
        notes = sorted(i["diagnostics"] for e in result["entry"]
                       if e["resource"]["resourceType"] == "OperationOutcome"
                       for i in e["resource"]["issue"])
        expected[pid] = {"issues": issues, "notes": notes, "orders": len(req.orders)}
    return expected


def _review(export: Path, out: Path, *extra: str) -> dict[str, Any]:
    code = main(["review", "--export-dir", str(export), "--out", str(out), "--check-time",
                 REFERENCE_TEXT, *extra])
    assert code == 0
    return dict(json.loads((out / "summary.json").read_text()))


def _by_patient(out: Path) -> tuple[dict[str, list[Any]], dict[str, list[str]]]:
    issues: dict[str, list[Any]] = defaultdict(list)
    with (out / "DetectedIssue.ndjson").open() as f:
        for line in f:
            issue = json.loads(line)
            issues[issue["patient"]["reference"].split("/")[1]].append(issue)
    notes: dict[str, list[str]] = defaultdict(list)
    with (out / "OperationOutcome.ndjson").open() as f:
        for line in f:
            for issue in json.loads(line)["issue"]:
                m = re.match(r"Patient/([^:]+): (.*?)( \[[^\]]* at [^\]]*\])?$",
                             issue["diagnostics"])
                if m:   # (the others are about the export's lines)
                    notes[m.group(1)].append(m.group(2))
    return issues, notes


def _key(issue: dict[str, Any]) -> str:
    return json.dumps(issue, sort_keys=True)


@pytest.mark.parametrize("form", ["plain", "gzip", "by-patient"])
def test_review_agrees_with_native_check_patient_by_patient(
        form: str, native: dict[str, Any], tmp_path: Path) -> None:
    export = tmp_path / "export"
    write_export(N, export, SEED, organize_by_patient=form == "by-patient",
                 compress=form == "gzip")
    if form == "gzip":
        assert all(p.name.endswith(".ndjson.gz") for p in export.glob("*.ndjson*"))
    summary = _review(export, tmp_path / "out", "--jobs", "2")
    issues, notes = _by_patient(tmp_path / "out")

    on_baclofen = [pid for pid, exp in native.items() if exp is not None]
    assert len(on_baclofen) > 30      # the generator's share on baclofen
    for pid, exp in native.items():
        got = sorted(map(_key, issues.get(pid, [])))
        if exp is None:
            assert got == [] and notes.get(pid, []) == [], pid
            continue
        assert got == sorted(map(_key, exp["issues"])), pid
        assert sorted(notes.get(pid, [])) == exp["notes"], pid
    assert set(issues) <= set(on_baclofen)

    every = [i for exp in native.values() if exp for i in exp["issues"]]
    assert summary["patientsRead"] == N
    assert summary["patientsOnBaclofen"] == len(on_baclofen)
    assert summary["patientsNotChecked"] == 0
    assert summary["findings"]["total"] == len(every)
    by_rule: dict[str, int] = defaultdict(int)
    for issue in every:
        by_rule[issue["identifier"][0]["value"]] += 1
    assert {r: sum(s.values()) for r, s in summary["findings"]["byRule"].items()} == by_rule
    for sev in ("high", "moderate", "low"):
        assert summary["findings"]["bySeverity"][sev] == sum(
            1 for i in every if i["severity"] == sev)
    assert sum(summary["renalBands"].values()) == len(on_baclofen)
    assert summary["ordersChecked"] == sum(exp["orders"] for exp in native.values() if exp)
    assert summary["problems"]["total"] == 0


def test_the_findings_are_valid_r4_and_cover_the_hazards(native: dict[str, Any]) -> None:
    rules = {i["identifier"][0]["value"] for exp in native.values() if exp
             for i in exp["issues"]}
    # the generator's population reaches the kidney, dialysis, children, older adults on
    # CNS-active drugs and intrathecal rules
    assert {"renal.dose-band", "renal.dialysis", "pediatric.off-label", "interaction.opioid",
            "geriatric.cns-burden", "oral.max-daily"} <= rules, rules
    some = next(exp for exp in native.values() if exp and exp["issues"])
    validate({"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": f"urn:uuid:{n:08d}-0000-4000-8000-000000000000",
                         "resource": r} for n, r in enumerate(some["issues"])]})


def _write(path: Path, lines: list[bytes], newline: bytes = b"\n") -> None:
    data = newline.join(lines) + newline
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _res(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


ORDER = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
         "medicationCodeableConcept": {"text": "baclofen 10 MG Oral Tablet"},
         "authoredOn": "2026-11-01T09:00:00Z",
         "dosageInstruction": [{"timing": {"repeat": {"frequency": 3, "period": 1,
                                                      "periodUnit": "d"}},
                                "doseAndRate": [{"doseQuantity": {
                                    "value": 40, "unit": "mg",
                                    "system": "http://unitsofmeasure.org", "code": "mg"}}]}]}


def test_what_cannot_be_read_is_named_with_file_and_line(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    _write(export / "Patient.ndjson", [
        _res({"resourceType": "Patient", "id": "a", "birthDate": "1970-01-01"}),
        b'{"resourceType": "Patient", "id": "b\xff"}',          # line 2: not UTF-8
        b"",
        b"not json at all",                                      # line 4
        _res({"resourceType": "Patient", "id": "c", "birthDate": "1980-01-01"}),
        b'["an array"]',                                         # line 6
        _res({"resourceType": "Patient", "id": "d", "birthDate": "1960-01-01"}),
    ], b"\r\n")
    _write(export / "MedicationRequest.ndjson.gz", [
        _res({**ORDER, "id": "o-a", "subject": {"reference": "Patient/a"}}),
        _res({**ORDER, "id": "o-x", "subject": {"reference": "Patient/x"}}),  # no Patient
        _res({**ORDER, "id": "o-none"}),                                      # no subject
        _res({**ORDER, "id": "o-c", "subject": {
            "reference": "https://ehr.example/fhir/Patient/c/_history/2"}}),
        # two orders without ids: the first for another medicine
        _res({k: v for k, v in {**ORDER, "subject": {"reference": "Patient/d"},
                                "medicationCodeableConcept": {"text": "lisinopril 10 MG"}}.items()
              if k != "id"}),
        _res({**ORDER, "subject": {"reference": "Patient/d"}}),
    ])
    _write(export / "Encounter.ndjson", [b"{}"])      # a type the rules do not read
    summary = _review(export, tmp_path / "out", "--jobs", "1")
    lines = (tmp_path / "out" / "OperationOutcome.ndjson").read_text().splitlines()
    for line in lines:
        validate(json.loads(line))        # each is a valid R4 OperationOutcome
    outcomes = [json.loads(line)["issue"][0]["diagnostics"] for line in lines]
    assert "Patient.ndjson line 2: the line is not UTF-8 text; not read" in outcomes
    assert "Patient.ndjson line 4: the line is not JSON; not read" in outcomes
    assert ("Patient.ndjson line 6: the line is not a FHIR resource (no resourceType); "
            "not read") in outcomes
    assert any(o.startswith("MedicationRequest.ndjson.gz line 3: MedicationRequest/o-none "
                            "names no patient") for o in outcomes), outcomes
    assert any(o.startswith("MedicationRequest.ndjson.gz line 2: Patient/x has active "
                            "medication orders but no Patient resource") for o in outcomes)
    assert summary["patientsRead"] == 3
    # a, c through its absolute reference, d through an order without an id
    assert summary["patientsOnBaclofen"] == 3
    assert summary["filesNotOpened"] == ["Encounter.ndjson"]
    issues, _notes = _by_patient(tmp_path / "out")
    assert {i["identifier"][0]["value"] for i in issues["a"]} >= {"oral.max-daily"}
    assert {i["severity"] for i in issues["c"] if
            i["identifier"][0]["value"] == "oral.max-daily"} == {"high"}


def test_a_patient_that_cannot_be_checked_is_named_and_the_rest_go_on(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    _write(export / "Patient.ndjson", [
        _res({"resourceType": "Patient", "id": "bad", "gender": "robot"}),
        _res({"resourceType": "Patient", "id": "good", "birthDate": "1970-01-01"}),
    ])
    _write(export / "MedicationRequest.ndjson", [
        _res({**ORDER, "id": "o-bad", "subject": {"reference": "Patient/bad"}}),
        _res({**ORDER, "id": "o-good", "subject": {"reference": "Patient/good"}}),
        _res({**ORDER, "id": "o-draft", "status": "draft",
              "subject": {"reference": "Patient/good"}}),
    ])
    summary = _review(export, tmp_path / "out", "--jobs", "1")
    assert summary["patientsNotChecked"] == 1
    assert summary["patientsOnBaclofen"] == 1
    text = (tmp_path / "out" / "OperationOutcome.ndjson").read_text()
    assert "Patient/bad: patient: Patient.gender: 'robot' is not one of" in text
    assert "[Patient/bad at Patient.ndjson line 1]" in text
    assert "Patient/good: MedicationRequest/o-draft is a draft order: not reviewed" in text
    issues, _ = _by_patient(tmp_path / "out")
    assert set(issues) == {"good"}
    for issue in issues["good"]:
        validate(issue)
    assert all(i["implicated"][0]["reference"] == "MedicationRequest/o-good"
               for i in issues["good"])


def test_bad_arguments_are_refused_with_a_message(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", "--export-dir", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["review", "--export-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--check-time", "yesterday"]) == 2
    assert "--check-time" in capsys.readouterr().err


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("report")
    write_export(N, base / "export", SEED)
    _review(base / "export", base / "out", "--jobs", "2")
    yield base / "out"
    shutil.rmtree(base, ignore_errors=True)


def test_report_opens_in_the_browser_with_its_charts(reviewed: Path,
                                                    browser: WebDriver) -> None:  # noqa: F811
    summary = json.loads((reviewed / "summary.json").read_text())
    browser.get((reviewed / "report.html").as_uri())
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "figure svg"), "the charts")
    figures = {f.get_attribute("id"): f for f in browser.find_elements(By.TAG_NAME, "figure")}
    assert set(figures) == {"findings-by-rule", "band-dose", "renal-bands"}
    for fid, fig in figures.items():
        svg = fig.find_element(By.TAG_NAME, "svg")
        assert svg.size["width"] > 300 and svg.size["height"] > 150, fid
    rule_chart = figures["findings-by-rule"].text
    assert "Findings by rule and severity" in rule_chart
    for rule in summary["findings"]["byRule"]:
        assert rule in rule_chart                 # every rule is a labelled bar
    bars = figures["findings-by-rule"].find_elements(By.CSS_SELECTOR, "g[id^='patch'] path")
    assert len(bars) >= len(summary["findings"]["byRule"])
    assert "renal band against daily dose" in figures["band-dose"].text
    # nothing fetched but the page itself
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched == []
    # the highest-severity patients first, each linking to its findings
    rows = browser.find_elements(By.CSS_SELECTOR, "#top-patients tbody tr")
    assert rows
    highs = [int(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows]
    assert highs == sorted(highs, reverse=True)
    link = rows[0].find_element(By.TAG_NAME, "a")
    target = link.get_attribute("href").split("#")[1]
    link.click()
    wait(browser, lambda d: d.execute_script("return location.hash") == f"#{target}",
         "the link to the patient's findings")
    section = browser.find_element(By.ID, target)
    assert "DetectedIssue.ndjson from line" in section.text
    assert section.find_elements(By.CSS_SELECTOR, "li .sev.high")
    OUTPUT.mkdir(exist_ok=True)
    browser.save_screenshot(str(OUTPUT / "review-report.png"))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_on_a_terminal_only() -> None:
    term = _Terminal()
    show = progress_bar(term)
    show("checking", 50, 100)
    assert "checking [###############               ]  50% 50/100" in term.getvalue()
    show("export: collecting", 3, 0)   # no known end: the seconds waited
    assert term.getvalue().endswith("export: collecting (3 s)")
    quiet = io.StringIO()
    progress_bar(quiet)("checking", 1, 2)
    assert quiet.getvalue() == ""


def test_the_same_input_gives_the_same_output(reviewed: Path, tmp_path: Path) -> None:
    """--check-time fixes the time: a second run (on one process instead of two) writes the
    same findings, outcomes and orders, byte for byte."""
    again = tmp_path / "again"
    _review(reviewed.parent / "export", again, "--jobs", "1")
    for name in ("DetectedIssue.ndjson", "OperationOutcome.ndjson", "orders-checked.txt"):
        assert (again / name).read_bytes() == (reviewed / name).read_bytes(), name


def test_too_little_memory_stops_the_review_with_a_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A grouping that cannot finish stops the review (a review with part of the export left
    out would look complete); a memory size DuckDB cannot read is refused."""
    write_export(40, tmp_path / "export", SEED)
    args = ["review", "--export-dir", str(tmp_path / "export"), "--out", str(tmp_path / "o"),
            "--jobs", "1", "--memory-limit"]
    assert main([*args, "2MB"]) == 2
    assert "ran out of memory grouping the export (memory limit 2MB)" in \
        capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.json").exists()
    assert main([*args, "lots"]) == 2
    assert "--memory-limit 'lots' is not a memory size" in capsys.readouterr().err
