"""``baclofen-check review``: a whole export checked, on one process per core, into files.

Writes into the output directory:

- ``DetectedIssue.ndjson``: one DetectedIssue per finding, patient by patient (patient id
  order), each exactly as the native ``$check`` of that patient's record renders it;
- ``OperationOutcome.ndjson``: what could not be read or checked, each issue naming the file
  and the line (lines of the export that are not read, resources that name no patient,
  patients that could not be checked, and the notes of each patient's check);
- ``orders-checked.txt``: each order checked (``Patient/x MedicationRequest/y``), for the
  write-back (an order checked with no finding any more gets its earlier ones cancelled);
- ``summary.json``: patients read, patients on baclofen, orders checked, findings by rule and
  severity, the renal band distribution, time and peak memory;
- ``report.html``: the same as charts (service/population/report.py).

The export is grouped by DuckDB on disk (service/population/export.py); patients go to the
worker processes in windows, at most two windows per process in flight, and results are
written in order as they come back, so memory does not grow with the number of patients.
"""

from __future__ import annotations

import heapq
import json
import logging
import multiprocessing
import os
import resource
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ..knowledge import Knowledge
from ..output.fhir import iso
from .check import SEVERITIES, PatientResult, check_record
from .export import ExportReader, Problem, Record
from .report import write_report

WINDOW_PATIENTS = 64
TOP_PATIENTS = 100
BANDS = ("normal", "mild", "moderate", "severe", "esrd", "dialysis", "no value")
_RANK = {"high": 3, "moderate": 2, "low": 1}


@dataclass
class Options:
    export_dir: Path
    out_dir: Path
    check_time: datetime
    profile: str
    jobs: int = 1
    max_line_bytes: int = 5_000_000
    memory_limit: str = "128MB"
    progress: Callable[[str, int, int], None] | None = None   # (stage, done, total)
    source: str | None = None    # where the export came from (a server's $export)


@dataclass
class Tally:
    patients_checked: int = 0
    patients_on_baclofen: int = 0
    patients_not_checked: int = 0
    patients_with_findings: int = 0
    orders: int = 0
    findings: int = 0
    by_severity: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))
    by_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    bands: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BANDS, 0))
    intrathecal_patients: int = 0
    points: list[tuple[str, float, str]] = field(default_factory=list)  # band, mg/day, worst
    top: list[tuple[tuple[int, int, int, str], dict[str, Any]]] = field(default_factory=list)
    issue_lines: int = 0
    outcome_lines: int = 0

    MAX_POINTS = 20000

    def add(self, r: PatientResult) -> None:
        if r.outcomes and not r.checked:
            self.patients_not_checked += 1
        if not r.checked:
            return
        self.patients_checked += 1
        self.patients_on_baclofen += 1
        self.orders += r.orders
        first_line = self.issue_lines + 1
        self.issue_lines += len(r.issues)
        counts = dict.fromkeys(SEVERITIES, 0)
        for rule, severity, _text in r.findings:
            self.findings += 1
            self.by_severity[severity] = self.by_severity.get(severity, 0) + 1
            per = self.by_rule.setdefault(rule, dict.fromkeys(SEVERITIES, 0))
            per[severity] = per.get(severity, 0) + 1
            counts[severity] = counts.get(severity, 0) + 1
        if r.findings:
            self.patients_with_findings += 1
        band = r.band or "no value"
        self.bands[band] = self.bands.get(band, 0) + 1
        if r.intrathecal:
            self.intrathecal_patients += 1
        worst = next((s for s in SEVERITIES if counts.get(s)), "none")
        if r.oral_daily_mg is not None and len(self.points) < self.MAX_POINTS:
            self.points.append((band, r.oral_daily_mg, worst))
        if r.findings:
            key = (counts["high"], counts["moderate"], counts["low"], _neg(r.pid))
            entry = {"patient": f"Patient/{r.pid}", "band": band, "renal": r.renal_ml_min,
                     "oralDailyMg": r.oral_daily_mg, "counts": counts,
                     "firstLine": first_line,
                     "findings": sorted(r.findings, key=lambda f: -_RANK[f[1]])}
            if len(self.top) < TOP_PATIENTS:
                heapq.heappush(self.top, (key, entry))
            elif key > self.top[0][0]:
                heapq.heapreplace(self.top, (key, entry))


def _neg(pid: str) -> str:
    """A sort key that puts smaller patient ids first among equal counts in a max-heap."""
    return "".join(chr(0x10FFFF - ord(c)) for c in pid[:64])


# --- worker processes -----------------------------------------------------------------------

# The review's knowledge, set by review() before it forks the workers, which inherit it (a
# Knowledge holds read-only mappings, which do not pickle).
_KB: Knowledge | None = None


def _warm() -> int:
    """Run in each worker before the export is opened (so each is forked before DuckDB starts
    its threads)."""
    return os.getpid()


def _check_window(records: list[Record], check_time: datetime, profile: str,
                  kb: Knowledge | None = None) -> list[PatientResult]:
    """``kb``: the knowledge, when the caller has its own (a Spark executor); else the one
    review() set before forking this worker."""
    kb = kb or _KB
    assert kb is not None, "set by review() before the workers are forked"
    out = []
    for record in records:
        try:
            out.append(check_record(record, check_time, profile, kb))
        except Exception as exc:  # noqa: BLE001 - one patient must not stop the review
            logging.getLogger("baclofen_check.review").exception(
                "review of a patient failed", extra={"error_type": type(exc).__name__})
            failed = PatientResult(record.pid)
            failed.outcomes.append(json.dumps({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "exception",
                "diagnostics": f"Patient/{record.pid}: internal error; the patient was not "
                               "checked"}]}))
            out.append(failed)
    return out


def _windows(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    window: list[Record] = []
    for record in records:
        window.append(record)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def check_all(records: Iterator[Record], check_time: datetime, profile: str, kb: Knowledge,
              jobs: int, emit: Callable[[PatientResult], None],
              pool: Any = None) -> None:
    """Check every record (in order) on ``pool`` (a process pool of ``jobs`` workers) or in
    this process; ``emit`` receives each result in record order."""
    if pool is None:
        for record in records:
            emit(check_record(record, check_time, profile, kb))
        return
    pending: deque[Any] = deque()
    for window in _windows(records, WINDOW_PATIENTS):
        pending.append(pool.submit(_check_window, window, check_time, profile))
        while len(pending) > 2 * jobs:
            for result in pending.popleft().result():
                emit(result)
    while pending:
        for result in pending.popleft().result():
            emit(result)


# --- the whole review -----------------------------------------------------------------------

def _problem_line(p: Problem) -> str:
    where = f"{p.file} line {p.line}" if p.line is not None else p.file
    return json.dumps({"resourceType": "OperationOutcome", "issue": [{
        "severity": p.severity, "code": p.code, "diagnostics": f"{where}: {p.message}",
        "location": [f"{where}"]}]})


def _peak_memory_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"review_process_mb": round(own, 1), "largest_worker_mb": round(children, 1)}


def review(options: Options, kb: Knowledge) -> dict[str, Any]:
    """Run the review; returns the summary (also written to summary.json)."""
    global _KB
    _KB = kb
    started = time.perf_counter()
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    pool = None
    jobs = max(1, options.jobs)
    if jobs > 1:
        # the workers are forked before DuckDB starts its threads
        pool = ProcessPoolExecutor(max_workers=jobs,
                                   mp_context=multiprocessing.get_context("fork"))
        for f in [pool.submit(_warm) for _ in range(jobs)]:
            f.result()
    try:
        with ExportReader(options.export_dir, kb, options.max_line_bytes,
                          options.memory_limit, out) as reader:
            reader.load()
            grouped = time.perf_counter()
            total = reader.stats.candidates
            with write_outputs(out, reader.problems, tally, options, total) as emit:
                check_all(reader.records(), options.check_time, options.profile, kb, jobs,
                          emit, pool)
            stats = reader.stats
            problems = reader.problems
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return finish(options, kb, tally, stats, problems, started, grouped)


@contextmanager
def write_outputs(out: Path, problems: list[Problem], tally: Tally, options: Options,
                  total: int) -> Iterator[Callable[[PatientResult], None]]:
    """The output files of a review (either engine): the export's problems first, then each
    patient's results, in patient id order, through the function yielded."""
    with open(out / "DetectedIssue.ndjson", "w", encoding="utf-8") as issues, \
            open(out / "OperationOutcome.ndjson", "w", encoding="utf-8") as outcomes, \
            open(out / "orders-checked.txt", "w", encoding="utf-8") as orders:
        for p in problems:
            outcomes.write(_problem_line(p) + "\n")
            tally.outcome_lines += 1
        done = 0

        def emit(r: PatientResult) -> None:
            nonlocal done
            done += 1
            for text in r.issues:
                issues.write(text + "\n")
            for text in r.outcomes:
                outcomes.write(text + "\n")
                tally.outcome_lines += 1
            for ref in r.order_refs:
                orders.write(f"Patient/{r.pid} {ref}\n")
            tally.add(r)
            if options.progress and (done % 200 == 0 or done == total):
                options.progress("checking", done, total)

        yield emit


def finish(options: Options, kb: Knowledge, tally: Tally, stats: Any, problems: list[Problem],
           started: float, grouped: float) -> dict[str, Any]:
    """summary.json and report.html (either engine); returns the summary."""
    finished = time.perf_counter()
    summary = _summary(options, kb, tally, stats, problems, started, grouped, finished)
    out = options.out_dir
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    write_report(out / "report.html", summary, _top(tally), tally.points)
    return summary


def _top(tally: Tally) -> list[dict[str, Any]]:
    return [entry for _key, entry in sorted(tally.top, key=lambda t: t[0], reverse=True)]


def _summary(options: Options, kb: Knowledge, tally: Tally, stats: Any,
             problems: list[Problem], started: float, grouped: float, finished: float
             ) -> dict[str, Any]:
    seconds = finished - started
    not_read = sum(1 for p in problems if p.severity == "error")
    return {
        "checkTime": iso(options.check_time),
        "profile": options.profile,
        "knowledgeVersion": kb.version,
        "source": options.source or str(options.export_dir),
        "files": stats.files,
        "filesNotOpened": stats.skipped_files,
        "linesRead": stats.lines,
        "resourcesRead": stats.resources,
        "resourcesIgnored": stats.ignored,
        "problems": {"notRead": not_read, "total": len(problems)},
        "patientsRead": stats.patients,
        "patientsScreened": stats.candidates,
        "patientsOnBaclofen": tally.patients_on_baclofen,
        "patientsNotChecked": tally.patients_not_checked,
        "patientsWithFindings": tally.patients_with_findings,
        "patientsIntrathecal": tally.intrathecal_patients,
        "ordersChecked": tally.orders,
        "findings": {"total": tally.findings, "bySeverity": tally.by_severity,
                     "byRule": dict(sorted(tally.by_rule.items()))},
        "renalBands": tally.bands,
        "outputs": {"DetectedIssue.ndjson": tally.issue_lines,
                    "OperationOutcome.ndjson": tally.outcome_lines},
        "seconds": {"grouping": round(grouped - started, 3),
                    "checking": round(finished - grouped, 3), "total": round(seconds, 3)},
        "patientsPerSecond": round(stats.patients / seconds, 1) if seconds else None,
        "ordersPerSecond": round(tally.orders / seconds, 1) if seconds else None,
        "jobs": options.jobs,
        "peakMemory": _peak_memory_mb(),
    }


def progress_bar(stream: TextIO = sys.stderr) -> Callable[[str, int, int], None]:
    """A one-line progress bar on a terminal (nothing otherwise)."""
    def show(stage: str, done: int, total: int) -> None:
        if not stream.isatty():
            return
        if total <= 0:  # no known end (an export in progress): the seconds waited
            stream.write(f"\r\033[K{stage} ({done} s)")
            stream.flush()
            return
        width = 30
        part = done / total if total else 1.0
        stream.write(f"\r{stage} [{'#' * int(part * width):<{width}}] {part * 100:3.0f}% "
                     f"{done}/{total}")
        if done >= total:
            stream.write("\r\033[K")
        stream.flush()
    return show
