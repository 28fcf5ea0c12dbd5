"""Command line: serve, check, rules, report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from .batch import Summary, check_file_parallel, check_lines, read_lines
from .checker import check_body
from .config import ConfigError, load_settings
from .errors import Problem, ServiceError
from .fhirjson import parse_instant
from .jsonbody import parse_json_text
from .knowledge import (
    Knowledge,
    KnowledgeError,
    RuleSpec,
    load,
    recognition_rows,
    rule_knowledge,
)
from .metrics import MULTIPROC_ENV
from .output.fhir import operation_outcome
from .population.commands import add_arguments as review_arguments
from .population.commands import review_cmd
from .serving import METRICS_PREFIX, remove_dead_metrics_dirs
from .watch.commands import add_arguments as watch_arguments
from .watch.commands import watch_cmd


def default_workers() -> int:
    """Two worker processes per core this process may run on (at most 16).

    choice: a check is CPU work under one interpreter lock per process, so processes, not
    threads, use the cores; two per core keep a core busy while a worker waits on the store or
    a FHIR server, and spread kept-alive connections over more processes (bench/run.py at 4
    connections on 2 cores: about 500 requests/s with 4 workers x 2 threads against about 460
    with 2 x 4, and a lower p99)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(2, min(16, 2 * cores))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="baclofen-check", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service under gunicorn")
    serve.add_argument("--bind", default=os.environ.get("BIND", "127.0.0.1:8080"))
    serve.add_argument("--workers", type=int,
                       default=int(os.environ.get("WORKERS", str(default_workers()))))
    serve.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    check = sub.add_parser("check", help="check Bundle/Parameters JSON or NDJSON files offline")
    check.add_argument("files", nargs="+", help="JSON files, NDJSON files (.ndjson, .jsonl: one "
                       "input per line), or - for standard input")
    check.add_argument("--ndjson", action="store_true",
                       help="read every file (and standard input) as NDJSON")
    check.add_argument("--profile", choices=["us", "uk"], default=None)
    check.add_argument("--check-time", default=None, help="FHIR dateTime (default: now)")
    check.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                       help="processes for NDJSON files (default: one per core; 1: this "
                            "process only)")
    sub.add_parser("rules", help="print the rule table from the knowledge data")
    review_arguments(sub.add_parser("review", help="review every active baclofen order of a "
                                    "FHIR Bulk Data export (a directory, or $export)"))
    sub.add_parser("report", help="print per rule: fired, accepted, overridden, top override "
                   "reasons, median latency (from the store at DATABASE_URL)")
    watch_arguments(sub.add_parser("watch", help="after the order: Subscriptions, the re-check "
                                   "worker and catch-up (service/watch/)"))
    spool = sub.add_parser("spool", help="the check records waiting under SPOOL_DIR")
    spool.add_subparsers(dest="spool_command", required=True).add_parser(
        "replay", help="write the records of stopped processes into the store at "
        "DATABASE_URL (running ones replay their own)")
    args = parser.parse_args(argv)
    try:
        kb = load()  # checked once, at start: a broken file stops every command here
    except KnowledgeError as exc:
        print(f"baclofen-check: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return serve_cmd(args)
        if args.command == "check":
            return check_cmd(args, sys.stdout, kb)
        if args.command == "report":
            return report_cmd(sys.stdout)
        if args.command == "spool":
            from .spool import replay_cmd  # lazy: SQLAlchemy, see report_cmd

            return replay_cmd(load_settings(), sys.stdout)
        if args.command == "watch":
            return watch_cmd(args, kb=kb)
        if args.command == "review":
            return review_cmd(args, kb)
        return rules_cmd(sys.stdout, kb)
    except ConfigError as exc:
        print(f"baclofen-check: configuration error: {exc}", file=sys.stderr)
        return 2


def serve_cmd(args: argparse.Namespace) -> int:
    load_settings()  # fail early on a bad configuration
    # Metrics from every worker go to a fresh directory (prometheus-client multiprocess mode),
    # named after this process (gunicorn keeps its pid): one left by a killed run goes here.
    remove_dead_metrics_dirs()
    os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-")
    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", args.bind,
        "--workers", str(args.workers),
        "--threads", str(args.threads),
        # gthread, except that a thread serves a connection only once its request arrived
        "--worker-class", "service.serving.BufferingWorker",
        "--config", "python:service.gunicorn_conf",
        # gunicorn's control socket is one path per user: off, so instances cannot meet there
        "--no-control-socket",
        "--access-logfile", "-",
        "--access-logformat", '{"access":"%(m)s %(U)s %(s)s %(M)sms"}',
        "service:create_app()",
    ]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with gunicorn
    return 0  # pragma: no cover


def _inputs(files: Sequence[str]) -> Iterator[tuple[str, Any]]:
    for name in files:
        try:
            if name == "-":
                text = sys.stdin.read()
            else:
                with open(name, encoding="utf-8") as stream:
                    text = stream.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            yield name, ServiceError(400, [Problem(f"{name}: cannot be read: {reason}",
                                                   "not-found")])
            continue
        try:
            yield name, parse_json_text(text)
        except ServiceError as exc:
            yield name, exc


def check_cmd(args: argparse.Namespace, out: TextIO, kb: Knowledge) -> int:
    settings = load_settings()
    profile = args.profile or settings.profile
    now = datetime.now(UTC)
    if args.check_time:
        parsed = parse_instant(args.check_time)
        if parsed is None:
            print("baclofen-check: --check-time is not a FHIR dateTime", file=sys.stderr)
            return 2
        now = parsed
    failures = 0
    ndjson = [f for f in args.files if args.ndjson or f.endswith((".ndjson", ".jsonl"))]
    if ndjson:
        failures += ndjson_cmd(ndjson, now if args.check_time else None, profile, out,
                               max(1, args.jobs), kb)
    json_files = [f for f in args.files if f not in ndjson]
    for name, body in _inputs(json_files):
        if isinstance(body, ServiceError):
            result: Any = operation_outcome(body.problems)
            failures += 1
        else:
            try:
                result = check_body(body, now, profile, kb)[0]
            except ServiceError as exc:
                result = operation_outcome(exc.problems)
                failures += 1
        if len(args.files) > 1 or ndjson:
            out.write(json.dumps(result) + "\n")
        else:
            out.write(json.dumps(result, indent=2) + "\n")
        if isinstance(body, ServiceError) or result.get("resourceType") == "OperationOutcome":
            print(f"baclofen-check: {name}: not checked", file=sys.stderr)
    return 1 if failures else 0


def ndjson_cmd(files: Sequence[str], fixed: datetime | None, profile: str, out: TextIO,
               jobs: int, kb: Knowledge) -> int:
    """Check NDJSON files line by line in constant memory (on ``jobs`` processes, in input
    order); progress and summary on stderr. Returns the number of lines not checked."""
    summary = Summary()
    progress = sys.stderr.isatty()

    def now() -> datetime:
        return fixed or datetime.now(UTC)

    for name in files:
        if name == "-":
            stream: Any = sys.stdin.buffer
            total = 0
        else:
            try:
                stream = open(name, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                print(f"baclofen-check: {name}: cannot be read: {exc.strerror}",
                      file=sys.stderr)
                summary.errors += 1
                continue
            total = os.fstat(stream.fileno()).st_size
        def emit(text: str, answered: int) -> None:
            out.write(text + "\n")
            if progress and answered % 200 == 0:
                _progress(name, answered, stream, total)  # noqa: B023 - used in this loop

        try:
            if jobs > 1:
                check_file_parallel(read_lines(stream, None), fixed, profile, jobs, summary,
                                    emit, kb)
            else:
                for line in check_lines(read_lines(stream, None), now, profile, kb, None,
                                        summary):
                    emit(json.dumps(line.result), line.number)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        if progress:
            sys.stderr.write("\r\033[K")
    out.flush()
    print(f"baclofen-check: {summary.text()}", file=sys.stderr)
    return summary.errors


def _progress(name: str, lines: int, stream: Any, total: int) -> None:
    width = 30
    try:
        done = stream.tell() / total if total else 0.0
    except OSError:
        done = 0.0
    bar = "#" * int(done * width)
    pct = f"{done * 100:3.0f}%" if total else "    "
    sys.stderr.write(f"\r{name} [{bar:<{width}}] {pct} {lines} lines")
    sys.stderr.flush()


def report_cmd(out: TextIO) -> int:
    """The alert report from the store at DATABASE_URL."""
    # lazy: the store loads SQLAlchemy, about 0.4 s of start-up that check and rules never use
    from .store import Store

    settings = load_settings()
    store = Store(settings.database_url, settings.audit_retention_days)
    try:
        store.migrate()
        rows = store.report()
    finally:
        store.close()
    out.write(format_report(rows))
    return 0


def format_report(rows: Sequence[Any]) -> str:
    header = ("rule", "fired", "accepted", "overridden", "median latency",
              "top override reasons")
    table = [header]
    for r in rows:
        latency = "-" if r.median_latency_ms is None else f"{r.median_latency_ms:.1f} ms"
        reasons = ", ".join(f"{reason} ({n})" for reason, n in r.top_override_reasons) or "-"
        table.append((r.rule_id, str(r.fired), str(r.accepted), str(r.overridden), latency,
                      reasons))
    if len(table) == 1:
        return "no checks recorded\n"
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = []
    for row in table:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, 5)]
        lines.append("  ".join(cells) + "  " + row[5])
    comments = [f"  {r.rule_id} ({reason or 'no reason'}): {' '.join(text.split())}"
                for r in rows for reason, text in r.comments]
    if comments:
        lines += ["", "newest override comments:", *comments]
    return "\n".join(lines) + "\n"


def rules_cmd(out: TextIO, kb: Knowledge) -> int:
    out.write(f"baclofen-check knowledge {kb.version}\n\n")
    out.write("baclofen recognised by\n")
    for label, text in recognition_rows(kb):
        out.write(f"  {label + ':':<11} {text}\n")
    out.write("\n")
    for rule in kb.rules.values():
        out.write(f"{rule.id}\n")
        out.write(f"  fires when: {rule.fires_when}\n")
        out.write(f"  severity:   {rule.severity}\n")
        code = f"{rule.code} ({kb.code_display[rule.code]})" if rule.code else "none (text only)"
        out.write(f"  code:       {code}\n")
        thresholds = rule.thresholds()
        if thresholds:
            out.write("  thresholds: " + ", ".join(f"{k}={v}" for k, v in thresholds.items())
                      + "\n")
        if rule.family in {"oral", "pediatric"}:
            for name, profile in kb.profiles.items():
                values = {k: v for k, v in profile.raw.items() if k != "label"}
                out.write(f"  profile {name}: " + ", ".join(f"{k}={v}" for k, v in
                                                            values.items()) + "\n")
        for label, text in related_knowledge(kb, rule):
            out.write(f"  {label + ':':<11} {text}\n")
        out.write(f"  source:     {rule.source_key} {rule.source_url}\n\n")
    return 0


def related_knowledge(kb: Knowledge, rule: RuleSpec) -> list[tuple[str, str]]:
    """Knowledge a rule reads outside its own entry: kidney bands and caps, drug classes."""
    rows: list[tuple[str, str]] = []
    if rule.family == "renal":
        renal = kb.typed.patient_context.renal
        rows.append(("bands", (
            f"normal > {renal.band_normal_above}, mild {renal.band_mild_from}-"
            f"{renal.band_normal_above}, moderate {renal.band_moderate_from} to < "
            f"{renal.band_mild_from}, severe < {renal.band_moderate_from}, "
            f"dialysis/ESRD < {renal.esrd_below} mL/min")))
        caps = ", ".join(f"{k} {v}" for k, v in renal.cap_fraction.items())
        rows.append(("caps", f"{caps} of the applicable cap; severe "
                             f"{renal.severe_cap_mg_day} mg/day; dialysis "
                             f"{renal.dialysis_cap_mg_day} mg/day"))
    cls = kb.typed.interactions.get(rule.id)
    if cls is not None:
        rows.append(("matches", ", ".join(cls.ingredients)))
        if cls.suffixes:
            rows.append(("suffixes", ", ".join(f"-{x}" for x in cls.suffixes)))
    if rule.id == "geriatric.cns-burden":
        for name, members in kb.typed.cns_active.classes.items():
            text = members if isinstance(members, str) else ", ".join(members)
            rows.append(("CNS class", f"{name}: {text}"))
    return rows + rule_knowledge(kb, rule.id)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
