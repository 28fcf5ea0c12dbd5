"""``baclofen-check watch subscribe [--remove]``, ``watch work [--once]``,
``watch catch-up --since TIME`` (the settings from the environment, as for ``serve``)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

from ..config import Settings, load_settings
from ..knowledge import Knowledge


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="watch_command", required=True)
    subscribe = sub.add_parser("subscribe", help="register (or update) the Subscriptions on "
                               "FHIR_SERVER_URL; idempotent")
    subscribe.add_argument("--remove", action="store_true",
                           help="delete this service's Subscriptions instead")
    subscribe.add_argument("--topics", action="store_true",
                           help="topic-based Subscriptions (Subscriptions Backport IG) on the "
                           "server's topics that cover the inputs, instead of the classic ones")
    subscribe.add_argument("--content", choices=("full-resource", "id-only"),
                           default="full-resource",
                           help="with --topics: what each notification carries")
    work = sub.add_parser("work", help="run the worker: re-checks from the queue, and every "
                          "WATCH_CHECK_S the Subscription check and catch-up")
    work.add_argument("--once", action="store_true", help="drain the queue and exit")
    work.add_argument("--threads", type=int, default=4,
                      help="re-checks at once in this process (default 4)")
    work.add_argument("--metrics-port", type=int, default=None,
                      help="serve this worker's Prometheus metrics on 127.0.0.1:PORT")
    catch = sub.add_parser("catch-up", help="queue the patients of every change since TIME "
                           "that no notification brought")
    catch.add_argument("--since", required=True,
                       help="FHIR instant with timezone, e.g. 2026-12-01T08:00:00Z")


def _open(settings: Settings) -> tuple[Any, Any]:
    from ..clock import wall_clock  # lazy: only this watch command
    from ..startup import open_audit_store  # lazy: only this watch command
    from . import worklist  # lazy: only this watch command
    from .queue import WatchStore  # lazy: only this watch command

    if settings.fhir_server_url is None:
        raise SystemExit("baclofen-check: the watch needs FHIR_SERVER_URL")
    if not settings.watch_notify_token and not settings.watch_notify_hmac_secret:
        raise SystemExit("baclofen-check: the watch needs WATCH_NOTIFY_TOKEN (or "
                         "WATCH_NOTIFY_HMAC_SECRET for servers that sign their notifications)")
    # a re-check's record waits in the spool when it must
    store = open_audit_store(settings, wall_clock)
    return store, worklist.create(WatchStore(store))


def _since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SystemExit(f"baclofen-check: --since {text!r} is not a date and time") from exc
    if moment.tzinfo is None:
        raise SystemExit("baclofen-check: --since needs a timezone (Z or +hh:mm)")
    return moment


def watch_cmd(args: argparse.Namespace, out: TextIO = sys.stdout,
              settings: Settings | None = None, *, kb: Knowledge) -> int:
    from ..fhir_input.fetch import fhir_server_client  # lazy: only this watch command
    from ..logs import configure_logging  # lazy: only this watch command
    from ..outbound.deadline import FetchFailure  # lazy: only this watch command

    configure_logging()  # JSON lines on standard error, as the service's
    settings = settings or load_settings()
    store, ws = _open(settings)
    try:
        client = fhir_server_client(settings)
        now = datetime.now(UTC)
        if args.watch_command == "subscribe" and getattr(args, "topics", False):
            from . import topics  # lazy: only this watch command

            try:
                made = topics.subscribe(client, settings, kb, ws, now, args.content,
                                        remove=args.remove)
            except FetchFailure as exc:
                print(f"baclofen-check: {exc}", file=sys.stderr)
                return 1
            out.write(json.dumps(made) + "\n")
            return 0
        if args.watch_command == "subscribe":
            from .subscriptions import subscribe  # lazy: only this watch command

            try:
                done = subscribe(client, settings, kb, ws, now, remove=args.remove)
            except FetchFailure as exc:
                print(f"baclofen-check: {exc}", file=sys.stderr)
                return 1
            out.write(json.dumps({"created": done.created, "updated": done.updated,
                                  "kept": done.kept, "deleted": done.deleted}) + "\n")
            return 0
        if args.watch_command == "catch-up":
            from .subscriptions import catch_up  # lazy: only this watch command

            since = _since(args.since)
            try:
                found = catch_up(client, settings, kb, ws, now, since=since)
            except FetchFailure as exc:
                print(f"baclofen-check: {exc}", file=sys.stderr)
                return 1
            out.write(json.dumps({"changed": found.found, "queued": found.queued}) + "\n")
            return 0
        from .worker import Worker  # lazy: only this watch command

        if args.metrics_port:
            from prometheus_client import start_http_server  # lazy: only this watch command

            start_http_server(args.metrics_port, addr="127.0.0.1")
        worker = Worker(settings, store, ws, kb)
        if args.once:
            n = worker.run(once=True)
            out.write(json.dumps({"rechecked": n, "queue": ws.depth()}) + "\n")
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        worker.run(threads=args.threads, stop=stop)
        return 0
    finally:
        store.close()
