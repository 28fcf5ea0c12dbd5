"""The ``review`` subcommand's arguments and its run (called from service/cli.py)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from ..config import load_settings
from ..fhirjson import parse_instant
from ..knowledge import Knowledge


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--export-dir", metavar="DIR",
                        help="a finished Bulk Data export (NDJSON per type or patient blocks, "
                             "plain or .gz); with --engine spark any location Spark reads "
                             "(hdfs://, s3a:// ...)")
    source.add_argument("--fhir-server", metavar="URL",
                        help="kick off $export on this FHIR server (its base URL), wait for "
                             "it and review what it exports")
    parser.add_argument("--group", metavar="ID", help="with --fhir-server: Group/{ID}/$export")
    parser.add_argument("--since", metavar="TIME",
                        help="with --fhir-server: only patients with resources changed since "
                             "TIME (each such patient's whole record is then exported)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--check-time", default=None, help="FHIR dateTime (default: now)")
    parser.add_argument("--engine", choices=["embedded", "spark"], default="embedded",
                        help="embedded: DuckDB and one process per core on this machine; "
                             "spark: an Apache Spark job (pip install 'baclofen-check[spark]', "
                             "Java 17)")
    parser.add_argument("--spark-master", metavar="URL", default=None,
                        help="with --engine spark: the master (default local[*], or the one "
                             "spark-submit was given)")
    parser.add_argument("--persist", action="store_true",
                        help="write the findings back to the FHIR server (FHIR_SERVER_URL, or "
                             "--fhir-server), in transaction batches")
    parser.add_argument("--profile", choices=["us", "uk"], default=None)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per core)")
    parser.add_argument("--memory-limit", default="128MB",
                        help="DuckDB's memory limit while grouping (it spills to disk beyond)")


def _fail(message: str) -> int:
    print(f"baclofen-check review: {message}", file=sys.stderr)
    return 2


def review_cmd(args: argparse.Namespace, kb: Knowledge) -> int:
    # the imports in this function are lazy: the CLI builds every command's parser from this
    # module, and only a review loads the checker, the bulk client, Spark or the write-back
    from .review import Options, progress_bar, review  # lazy: only a review

    if args.spark_master and args.engine != "spark":
        return _fail("--spark-master goes with --engine spark")
    if (args.group or args.since) and not args.fhir_server:
        return _fail("--group and --since go with --fhir-server")
    settings = load_settings()
    if args.fhir_server and settings.fhir_server_url is None:
        # the server named here is the FHIR server of this run (its authentication and
        # allow-list come from the same settings as FHIR_SERVER_URL's)
        settings = load_settings({"FHIR_SERVER_URL": args.fhir_server})
    check_time = datetime.now(UTC)
    if args.check_time:
        parsed = parse_instant(args.check_time)
        if parsed is None:
            return _fail("--check-time is not a FHIR dateTime with a time zone")
        check_time = parsed
    if args.since and parse_instant(args.since) is None:
        return _fail("--since is not a FHIR instant with a time zone")
    out: Path = args.out
    source = None
    location = args.export_dir
    export_dir = Path(location) if location else None
    if args.fhir_server:
        from .bulk import BulkError, export_to  # lazy: only a review

        try:
            export_dir = export_to(args.fhir_server, out / "export", settings, args.group,
                                   args.since, kb, progress_bar())
        except BulkError as exc:
            return _fail(str(exc))
        source = args.fhir_server.rstrip("/") + (f"/Group/{args.group}" if args.group else "")
    elif args.engine == "spark" and "://" in location:
        source = location   # a location Spark reads (it says so if it cannot)
    elif export_dir is None or not export_dir.is_dir():
        return _fail(f"{location} is not a directory")
    assert export_dir is not None
    options = Options(export_dir, out, check_time, args.profile or settings.profile,
                      max(1, args.jobs), settings.max_request_bytes, args.memory_limit,
                      progress_bar(), source)
    if args.engine == "spark":
        from .spark import SparkReviewError, spark_review  # lazy: only a review

        try:
            summary = spark_review(options, kb, location if source == location
                                   else str(export_dir), args.spark_master)
        except SparkReviewError as exc:
            return _fail(str(exc))
    else:
        summary = review(options, kb)
    if args.persist:
        from .persist import PersistError, persist_findings  # lazy: only a review

        base = args.fhir_server or settings.fhir_server_url
        if not base:
            return _fail("--persist needs --fhir-server or FHIR_SERVER_URL")
        try:
            written = persist_findings(out, base, settings, check_time)
        except PersistError as exc:
            return _fail(str(exc))
        print(f"baclofen-check review: written back: {written}", file=sys.stderr)
    f = summary["findings"]
    print(f"baclofen-check review: {summary['patientsRead']} patients read, "
          f"{summary['patientsOnBaclofen']} on baclofen, {summary['ordersChecked']} orders "
          f"checked, {f['total']} findings (high {f['bySeverity']['high']}, moderate "
          f"{f['bySeverity']['moderate']}, low {f['bySeverity']['low']}); "
          f"{summary['patientsNotChecked']} patients not checked; outputs in {out}",
          file=sys.stderr)
    return 0
