"""Process CPU per typical order-sign call, and where it goes (cProfile, by own time).

    .venv/bin/python bench/cpu_sign.py [--calls 300] [--top 30] [--fresh] [--phases]
                                       [--no-profile] [--sort tottime] [--callers NAME]
                                       [--inline-store]

CPU, not wall time: the machine is shared, so time.process_time() (user + system CPU of every
thread of this process: the store's guard thread too) is read around N calls. The call is the
one bench/run.py's http section sends (bench/payloads.order_sign_call), through the Flask test
client of create_app with the settings bench/step_profile.py uses (CDS_REQUIRE_JWT and
API_REQUIRE_AUTH off, the audit store in a temporary SQLite file, the JSON logs to a file).
Like wrk there, the same body is sent every time (a retried call, recorded once); --fresh
gives each call its own hookInstance, so each is recorded. As under ``baclofen-check serve``,
the metrics are in prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, a temporary
directory, set before anything imports prometheus_client) and what the warm-up calls made is
frozen out of the garbage collector's reach (gc.freeze, as service/gunicorn_conf.py does).

Prints the CPU ms per call (best of three rounds, each of --calls calls, after 50 warm-up
calls), then, unless --no-profile, a cProfile run of the same calls sorted by own time
(cProfile's overhead inflates the figures; compare them with each other, not with the first;
it sees the main thread only, and its clock is the process's CPU, so a wait on the store's
thread shows as that thread's CPU). --phases adds the CPU per step of the endpoint.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# before prometheus_client is imported: it picks its value class then
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="baclofen-cpu-metrics-"))

from bench import payloads  # noqa: E402
from bench.run import SIGN_PATH, _quiet_logs  # noqa: E402
from bench.step_profile import phases  # noqa: E402
from service import create_app  # noqa: E402
from service.cds.discovery import prefetch_templates  # noqa: E402
from service.knowledge import load  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="server CPU per order-sign call")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--fresh", action="store_true",
                        help="a new hookInstance per call (each call recorded)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--sort", default="tottime", help="pstats sort key")
    parser.add_argument("--inline-store", action="store_true",
                        help="store calls on the calling thread (store._Guard without timeout),"
                             " so that cProfile sees them")
    parser.add_argument("--callers", metavar="NAME",
                        help="also who calls the functions matching NAME (a pstats pattern)")
    parser.add_argument("--phases", action="store_true",
                        help="also CPU ms per call in each step of the CDS endpoint")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="baclofen-cpu-"))
    body = payloads.order_sign_call(datetime.now(UTC), prefetch_templates(load()))
    _quiet_logs(workdir)
    app = create_app({"CDS_REQUIRE_JWT": False, "API_REQUIRE_AUTH": False,
                      "DATABASE_URL": f"sqlite:///{workdir / 'cpu.sqlite3'}"})
    client = app.test_client()
    if args.inline_store:
        app.extensions["store"].guard.timeout_s = None
    same = json.dumps(body).encode()

    def data() -> bytes:
        if not args.fresh:
            return same
        body["hookInstance"] = str(uuid.uuid4())
        return json.dumps(body).encode()

    def call() -> None:
        resp = client.post(SIGN_PATH, data=data(), content_type="application/json")
        assert resp.status_code == 200, resp.data[:300]

    for _ in range(50):
        call()
    gc.freeze()
    rounds = []
    for _ in range(3):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(args.calls):
            call()
        rounds.append((time.process_time() - c0, time.perf_counter() - w0))
    cpu, wall = min(rounds)
    print(f"order-sign ({'fresh' if args.fresh else 'same body'}): "
          f"{cpu * 1000 / args.calls:.2f} ms CPU per call (best of 3 x {args.calls}; rounds "
          + ", ".join(f"{c * 1000 / args.calls:.2f}" for c, _ in rounds)
          + f"), wall {wall * 1000 / args.calls:.2f} ms")
    if args.phases:
        print(json.dumps(phases(call, args.calls, time.process_time), indent=1))
    if args.no_profile:
        return 0
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(args.calls):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats(args.sort).print_stats(args.top)
    if args.callers:
        stats.print_callers(args.callers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
