"""Command line: serve, check, rules."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from .config import ConfigError, load_settings
from .errors import ServiceError
from .output.fhir import operation_outcome


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="baclofen-check", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service under gunicorn")
    serve.add_argument("--bind", default=os.environ.get("BIND", "127.0.0.1:8080"))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "2")))
    serve.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "4")))
    check = sub.add_parser("check", help="check Bundle/Parameters JSON files offline")
    check.add_argument("files", nargs="+", help="JSON files (or - for standard input)")
    check.add_argument("--profile", choices=["us", "uk"], default=None)
    check.add_argument("--check-time", default=None, help="FHIR dateTime (default: now)")
    sub.add_parser("rules", help="print the rule table from the knowledge data")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return serve_cmd(args)
        if args.command == "check":
            return check_cmd(args, sys.stdout)
        return rules_cmd(sys.stdout)
    except ConfigError as exc:
        print(f"baclofen-check: configuration error: {exc}", file=sys.stderr)
        return 2


def serve_cmd(args: argparse.Namespace) -> int:
    load_settings()  # fail early on a bad configuration
    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", args.bind,
        "--workers", str(args.workers),
        "--threads", str(args.threads),
        "--worker-class", "gthread",
        "--access-logfile", "-",
        "--access-logformat", '{"access":"%(m)s %(U)s %(s)s %(M)sms"}',
        "service:create_app()",
    ]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with gunicorn
    return 0  # pragma: no cover


def _inputs(files: Sequence[str]) -> Iterator[tuple[str, Any]]:
    from .web.body import parse_json_text

    for name in files:
        stream: TextIO
        stream = sys.stdin if name == "-" else open(name, encoding="utf-8")  # noqa: SIM115
        with stream:
            text = stream.read()
        try:
            yield name, parse_json_text(text)
        except ServiceError as exc:
            yield name, exc


def check_cmd(args: argparse.Namespace, out: TextIO) -> int:
    from .checker import check_body
    from .fhirjson import parse_instant

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
    for name, body in _inputs(args.files):
        if isinstance(body, ServiceError):
            result: Any = operation_outcome(body.problems)
            failures += 1
        else:
            try:
                result = check_body(body, now, profile)[0]
            except ServiceError as exc:
                result = operation_outcome(exc.problems)
                failures += 1
        if len(args.files) > 1:
            out.write(json.dumps(result) + "\n")
        else:
            out.write(json.dumps(result, indent=2) + "\n")
        if isinstance(body, ServiceError) or result.get("resourceType") == "OperationOutcome":
            print(f"baclofen-check: {name}: not checked", file=sys.stderr)
    return 1 if failures else 0


def rules_cmd(out: TextIO) -> int:
    from .knowledge import load

    kb = load()
    out.write(f"baclofen-check knowledge {kb.version}\n\n")
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
        out.write(f"  source:     {rule.source_key} {rule.source_url}\n\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
