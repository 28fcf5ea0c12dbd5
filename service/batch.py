"""NDJSON batches: one input (Bundle or Parameters) per line -> one result per line, in order.

Shared by ``POST /MedicationRequest/$check`` with ``Content-Type: application/fhir+ndjson``
and by ``baclofen-check check FILE.ndjson``. Lines are read and answered one at a time, so
memory does not grow with the number of lines.

- A line that cannot be checked (too long, not JSON, not a checkable resource) yields an
  OperationOutcome line whose diagnostics start with ``line N:``; the rest goes on.
- Blank lines are skipped (they are not inputs, and get no output line), but count towards the
  line limit: a body of newlines costs no more than one of inputs.
- A line longer than the limit (``MAX_REQUEST_BYTES`` on the HTTP endpoint) is skipped without
  being held in memory, with an OperationOutcome line (``too-costly``).
- With a line limit (``MAX_BATCH_LINES`` on the HTTP endpoint; the CLI has none), the lines
  past it are not read; one final OperationOutcome line says so (the response has already
  started with 200, so the limit cannot be a 413).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from .assemble import CheckRequest
from .assemble.native import parse_body
from .engine import run_check
from .errors import Problem, ServiceError
from .fhirjson import JSON
from .jsonbody import parse_json_text
from .knowledge import Knowledge
from .output.fhir import IssueEntry, operation_outcome, render_result

log = logging.getLogger("baclofen_check.batch")
CHUNK = 64 * 1024


class TooLong:
    """A line longer than the limit (its bytes were read and dropped)."""

    def __init__(self, size: int) -> None:
        self.size = size


def read_lines(stream: IO[bytes], max_line_bytes: int | None) -> Iterator[bytes | TooLong]:
    """Lines of a binary stream without their newline; a line over the limit is a TooLong."""
    limit = max_line_bytes + 1 if max_line_bytes else -1
    while True:
        line = stream.readline(limit)
        if not line:
            return
        if max_line_bytes and len(line.rstrip(b"\r\n")) > max_line_bytes:
            size = len(line)
            while not line.endswith(b"\n"):
                line = stream.readline(CHUNK)
                if not line:
                    break
                size += len(line)
            yield TooLong(size)
            continue
        yield line.rstrip(b"\r\n")


@dataclass
class Summary:
    checked: int = 0
    errors: int = 0
    findings: dict[str, int] = field(default_factory=lambda: {"high": 0, "moderate": 0,
                                                              "low": 0})

    def text(self) -> str:
        f = self.findings
        return (f"checked {self.checked}, errors {self.errors}, findings: high {f['high']}, "
                f"moderate {f['moderate']}, low {f['low']}")


@dataclass
class LineResult:
    number: int
    result: JSON
    request: CheckRequest | None   # None when the line could not be checked
    seen: int = 0                  # lines read so far, blank ones too
    digest: str = ""               # of the line's text (what identifies a retried line)
    issues: list[IssueEntry] = field(default_factory=list)   # each finding, its DetectedIssue


def from_line(raw: bytes, now: datetime, profile: str, kb: Knowledge) -> CheckRequest:
    """The NDJSON line's adapter: the line's JSON is a native body (a Parameters or a Bundle),
    at the ``ndjson`` door of the status table."""
    body: Any = parse_json_text(raw)
    return parse_body(body, now, profile, kb, door="ndjson")


def check_lines(
    lines: Iterator[bytes | TooLong],
    now: Callable[[], datetime],
    profile: str,
    kb: Knowledge,
    max_lines: int | None = None,
    summary: Summary | None = None,
    start: int = 0,
) -> Iterator[LineResult]:
    """Check each line in order and yield its result (a Bundle or an OperationOutcome).
    ``start`` is the number of lines before these (a window of a larger file)."""
    tally = summary if summary is not None else Summary()
    number = start
    seen = 0
    for raw in lines:
        seen += 1
        if max_lines is not None and seen > max_lines:
            yield LineResult(number + 1, operation_outcome([Problem(
                f"the batch holds more than {max_lines} lines (MAX_BATCH_LINES, blank lines "
                f"included): line {seen} and the lines after it were not read or checked",
                "too-costly")]), None, seen)
            return
        if not isinstance(raw, TooLong) and not raw.strip():
            continue
        number += 1
        if isinstance(raw, TooLong):
            tally.errors += 1
            yield LineResult(number, operation_outcome([Problem(
                f"line {number}: the line is {raw.size} bytes, more than the limit; not "
                "checked", "too-costly")]), None, seen)
            continue
        try:
            req = from_line(raw, now(), profile, kb)
            checked = render_result(req, run_check(req, kb), kb)
        except ServiceError as exc:
            tally.errors += 1
            yield LineResult(number, operation_outcome([
                Problem(f"line {number}: {p.message}", p.code, p.expression, p.severity)
                for p in exc.problems]), None, seen)
            continue
        except Exception as exc:  # noqa: BLE001 - one bad line must not stop the batch
            log.exception("batch line failed", extra={"error_type": type(exc).__name__})
            tally.errors += 1
            yield LineResult(number, operation_outcome([Problem(
                f"line {number}: internal error; the line was not checked", "exception")]),
                None, seen)
            continue
        tally.checked += 1
        for issue in checked.issues:
            severity = issue.finding.severity
            tally.findings[severity] = tally.findings.get(severity, 0) + 1
        yield LineResult(number, checked.bundle, req, seen, hashlib.sha256(raw).hexdigest()[:32],
                         checked.issues)


# --- the command line on every core -------------------------------------------------------

WINDOW_LINES = 256
# The knowledge the worker processes check with: set by check_file_parallel before it forks
# them, so each inherits it (a Knowledge holds read-only mappings, which do not pickle).
_WORKER_KB: Knowledge | None = None


def _check_window(window: list[bytes], start: int, fixed: datetime | None, profile: str
                  ) -> tuple[list[str], Summary]:
    """Check one window of non-blank lines in a worker process: the output lines as JSON
    text, and the window's tally. ``start`` is the number of lines before the window."""
    assert _WORKER_KB is not None, "set by check_file_parallel before the fork"
    tally = Summary()
    results = check_lines(iter(window), lambda: fixed or datetime.now(UTC), profile, _WORKER_KB,
                          None, tally, start)
    return [json.dumps(line.result) for line in results], tally


def check_file_parallel(
    lines: Iterator[bytes | TooLong], fixed: datetime | None, profile: str, jobs: int,
    summary: Summary, emit: Callable[[str, int], None], kb: Knowledge,
) -> None:
    """Check NDJSON lines (read without a length limit) on ``jobs`` processes, in input
    order and in constant memory: windows of WINDOW_LINES non-blank lines, at most 2 x
    ``jobs`` windows in flight. ``emit(text, answered)`` receives each output line."""
    global _WORKER_KB
    _WORKER_KB = kb
    pending: deque[Future[tuple[list[str], Summary]]] = deque()
    answered = 0

    def drain(keep: int) -> None:
        nonlocal answered
        while len(pending) > keep:
            out, tally = pending.popleft().result()
            summary.checked += tally.checked
            summary.errors += tally.errors
            for key, value in tally.findings.items():
                summary.findings[key] = summary.findings.get(key, 0) + value
            for text in out:
                answered += 1
                emit(text, answered)

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        window: list[bytes] = []
        start = 0
        for raw in lines:
            assert not isinstance(raw, TooLong), "the command line reads without a limit"
            if not raw.strip():
                continue
            window.append(raw)
            if len(window) == WINDOW_LINES:
                pending.append(pool.submit(_check_window, window, start, fixed, profile))
                start += len(window)
                window = []
                drain(2 * jobs)
        if window:
            pending.append(pool.submit(_check_window, window, start, fixed, profile))
        drain(0)
