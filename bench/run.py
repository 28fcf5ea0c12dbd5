"""make bench: how fast baclofen-check is, measured against the cost of any Flask request.

Prints one JSON report (ratios and targets first) and writes it to bench/results/<time>.json:

- engine: checks per second in this process for (a) one order with patient and labs
  (Parameters through service.checker.check_body), (b) the typical order-sign call with full
  prefetch (through the CDS functions, and through the Flask test client with the store), and
  (c) a 200-entry review Bundle;
- http: the service under gunicorn, started exactly as ``baclofen-check serve`` starts it, and
  a bare Flask endpoint (bench/bare_app.py) under the same gunicorn command, both loaded by
  wrk at concurrency 1, 4 and 16 with the typical order-sign call: requests per second,
  p50/p95/p99, and the ratio service/bare (the headline figure);
- self_fetch: the order-sign call with no prefetch, the service reading the sekmet FHIR server
  through bench/latency_proxy.py (20 ms added to every answer): the call's latency against the
  slowest single query it makes, each query measured alone through the same proxy;
- batch: ``baclofen-check check FILE.ndjson`` over 100,000 lines: checks per second and the
  child's memory (peak, and sampled while it runs to show whether it stays flat).
- population: ``baclofen-check review`` over generated Bulk Data exports of 10,000 and
  100,000 patients (bench/population_bench.py): patients and orders per second, and the peak
  memory of all its processes at each size; and 10,000 patients on ``--engine spark`` at
  ``local[2]`` and ``local[1]`` against the embedded engine (bench/spark_bench.py).
- watch: against sekmet with the Subscriptions registered, 200 patients on baclofen and a
  burst of 1,000 new creatinine results (bench/watch_bench.py): event-to-DetectedIssue
  latency p50/p95/p99, re-checks per second, queue depth over time, worker memory, and
  whether every expected finding is on the server exactly once.

Not a test: nothing here passes or fails the build. The machine may be shared; the report
records the load average before and after so that noisy numbers can be recognised.

    .venv/bin/python bench/run.py [--quick] [--only engine,http,self_fetch,batch,population,watch]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import payloads  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
SIGN_PATH = f"/cds-services/{payloads.SIGN_SERVICE}"
CONCURRENCY = (1, 4, 16)
PROXY_DELAY_MS = 20.0

TARGETS = {
    "http_ratio_c4": ">= 0.5",
    "http_p99_ms_c4": "< 25",
    "self_fetch_ratio": "<= 1.5",
    "batch_checks_per_s": ">= 1000",
    "batch_memory_flat": "true",
    "population_largest_s": "< 300",
    "population_memory_ratio": "<= 1.2",
    "watch_p99_s": "< 10",
    "watch_correct": "true",
}

WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "non_2xx": %d, ' ..
    '"errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_timeout": %d, ' ..
    '"mean_us": %.1f, "p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "service"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+uncommitted service changes" if dirty.stdout.strip()
                                     else "")
    except (OSError, subprocess.SubprocessError):
        return None


# --- engine ---------------------------------------------------------------------------------

def measure(fn: Callable[[], object], seconds: float, warmup: int = 20) -> dict[str, Any]:
    """Call ``fn`` repeatedly for about ``seconds``; rate and per-call latency."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    cpu_started = time.process_time()
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if t1 - started >= seconds:
            break
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {"checks_per_s": round(len(times) / elapsed, 1), "calls": len(times),
            "mean_ms": ms(statistics.fmean(times)), "p50_ms": ms(percentile(times, 50)),
            "p99_ms": ms(percentile(times, 99)),
            "cpu_ms_per_call": ms(cpu / len(times))}


def engine_section(seconds: float, workdir: Path) -> dict[str, Any]:
    from service import create_app
    from service.cds.discovery import SERVICES, prefetch_templates
    from service.cds.prefetch import gather
    from service.cds.request import from_hook, medication_reads, parse_call
    from service.checker import check_body
    from service.engine import run_check
    from service.knowledge import load
    from service.output.cards import render_cards

    kb = load()
    now = datetime.now(UTC)
    templates = prefetch_templates(kb)
    one = json.dumps(payloads.one_order_parameters(now))
    review = json.dumps(payloads.review_bundle(now))
    sign = json.dumps(payloads.order_sign_call(now, templates))
    service = SERVICES[payloads.SIGN_SERVICE]

    def run_one() -> object:
        return check_body(json.loads(one), now, "us", kb)

    def run_review() -> object:
        return check_body(json.loads(review), now, "us", kb)

    def run_sign_functions() -> object:
        # what service/web/cds_hooks.py call_service does, without Flask and the store
        call = parse_call(json.loads(sign), service)
        data = gather(call, {**templates, **medication_reads(call)}, None)
        req = from_hook(call, data, now, "us")
        return render_cards(req, run_check(req, kb), kb, "final")

    _quiet_logs(workdir)
    app = create_app({"CDS_REQUIRE_JWT": False, "API_REQUIRE_AUTH": False,
                      "DATABASE_URL": f"sqlite:///{workdir / 'engine.sqlite3'}"})
    client = app.test_client()
    sign_bytes = sign.encode()

    def run_sign_client() -> object:
        resp = client.post(SIGN_PATH, data=sign_bytes, content_type="application/json")
        if resp.status_code != 200:
            raise RuntimeError(f"order-sign answered {resp.status_code}")
        return resp

    results: dict[str, Any] = {}
    for name, fn, size in (
        ("one_order_parameters", run_one, len(one)),
        ("order_sign_prefetch_functions", run_sign_functions, len(sign)),
        ("order_sign_prefetch_test_client", run_sign_client, len(sign)),
        ("review_bundle_200", run_review, len(review)),
    ):
        log(f"engine: {name}")
        results[name] = {"body_bytes": size, **measure(fn, seconds)}
    results["note"] = ("in-process, one thread; every call parses the body from JSON text; the "
                       "test-client figure adds Flask, request logging and the audit-store "
                       "write (SQLite in a temporary directory); cpu_ms_per_call is this "
                       "process's CPU time per call, less sensitive to other load than the "
                       "wall-clock rate")
    return results


def _quiet_logs(workdir: Path) -> None:
    """The service's JSON logs still get formatted and written, to a file, not the report."""
    import logging

    from service.logs import configure_logging

    configure_logging()  # the service's own handler, which create_app then keeps
    sink = open(workdir / "engine-logs.jsonl", "w", encoding="utf-8")  # noqa: SIM115
    for handler in logging.getLogger("baclofen_check").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sink)


# --- servers --------------------------------------------------------------------------------

def serve_command(bind: str, app_spec: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The exact gunicorn command ``baclofen-check serve --bind BIND`` runs (its defaults for
    workers and threads) and the environment variables it sets for it, with ``app_spec`` in
    place of the service's factory when given. Read by running the real ``serve`` with
    ``os.execv`` caught, so that the bench follows any change to it."""
    from service import cli

    captured: list[list[str]] = []
    added: dict[str, str] = {}
    before = dict(os.environ)

    class _Captured(Exception):
        pass

    def fake_execv(path: str, argv: list[str]) -> None:
        captured.append(list(argv))
        added.update({k: v for k, v in os.environ.items() if before.get(k) != v})
        raise _Captured

    with mock.patch.dict(os.environ), mock.patch.object(cli.os, "execv", fake_execv), \
            suppress(_Captured):
        cli.main(["serve", "--bind", bind])
    argv = captured[0]
    if app_spec is not None:
        argv[-1] = app_spec
    return argv, added


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]


@contextmanager
def gunicorn(name: str, app_spec: str | None, env: dict[str, str], workdir: Path,
             ready_path: str = "/healthz") -> Iterator[Server]:
    port = free_port()
    argv, added = serve_command(f"127.0.0.1:{port}", app_spec)
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env={**env, **added}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, f"http://127.0.0.1:{port}", proc, log_path, argv)
    try:
        _wait_ready(server, ready_path)
        yield server
    finally:
        stop(proc)
        for value in added.values():  # serve's own temporary directories, if left
            if value.startswith(tempfile.gettempdir()) and Path(value).is_dir():
                shutil.rmtree(value, ignore_errors=True)


def _wait_ready(server: Server, path: str) -> None:
    import requests

    for _ in range(400):
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {server.log_path.read_text()[-2000:]}")
        with suppress(requests.RequestException):
            if requests.get(server.url + path, timeout=1).status_code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def service_env(workdir: Path, allowlist: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FHIR_", "BACLOFEN_"))}
    env.update({
        "API_REQUIRE_AUTH": "false", "CDS_REQUIRE_JWT": "false",
        "DATABASE_URL": f"sqlite:///{workdir / 'service.sqlite3'}",
        "PYTHONPATH": str(ROOT), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    })
    env.pop("WORKERS", None)
    env.pop("THREADS", None)
    if allowlist:
        env["FHIR_ALLOWLIST"] = allowlist
    return env


# --- http -----------------------------------------------------------------------------------

def wrk(url: str, body_path: Path, script: Path, connections: int, seconds: float
        ) -> dict[str, Any]:
    threads = min(2, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
           "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                         env={**os.environ, "BENCH_BODY": str(body_path)}, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            raw = json.loads(line[len("BENCH_JSON "):])
            secs = raw["duration_us"] / 1e6
            errors = sum(raw[k] for k in raw if k.startswith("errors_"))
            return {
                "connections": connections,
                "requests": raw["requests"],
                "rps": round(raw["requests"] / secs, 1),
                "p50_ms": raw["p50_us"] / 1000, "p95_ms": raw["p95_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000,
                "mean_ms": round(raw["mean_us"] / 1000, 3),
                "non_2xx": raw["non_2xx"], "socket_errors": errors,
            }
    raise RuntimeError(f"wrk printed no report: {out.stdout[-500:]} {out.stderr[-500:]}")


def http_section(server: Server, workdir: Path, seconds: float, warmup: float
                 ) -> dict[str, Any]:
    import requests

    from service.cds.discovery import prefetch_templates
    from service.knowledge import load

    body = payloads.order_sign_call(datetime.now(UTC), prefetch_templates(load()))
    body_path = workdir / "order-sign.json"
    body_path.write_text(json.dumps(body), encoding="utf-8")
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    first = requests.post(server.url + SIGN_PATH, data=body_path.read_bytes(),
                          headers={"Content-Type": "application/json"}, timeout=30)
    if first.status_code != 200:
        raise RuntimeError(f"the service answered {first.status_code}: {first.text[:300]}")
    answer = workdir / "answer.json"
    answer.write_bytes(first.content)
    cards = [c.get("indicator") for c in first.json()["cards"]]

    env = service_env(workdir)
    env["BENCH_BARE_RESPONSE"] = str(answer)
    out: dict[str, Any] = {
        "request_bytes": body_path.stat().st_size, "response_bytes": len(first.content),
        "cards": cards, "seconds_per_point": seconds,
        "server_argv": server.argv[3:],
    }
    points: dict[str, dict[int, dict[str, Any]]] = {"service": {}, "bare": {}}
    with gunicorn("bare", "bench.bare_app:create_app()", env, workdir,
                  ready_path="/healthz") as bare:
        check = requests.post(bare.url + SIGN_PATH, data=body_path.read_bytes(),
                              headers={"Content-Type": "application/json"}, timeout=30)
        if len(check.content) != len(first.content):
            raise RuntimeError("the bare endpoint's answer is not the service's size")
        # interleave the two servers at each concurrency so that a burst of load from
        # elsewhere on the machine hits both alike
        for target in (server, bare):
            wrk(target.url + SIGN_PATH, body_path, script, 4, warmup)
        for c in CONCURRENCY:
            for key, target in (("service", server), ("bare", bare)):
                log(f"http: {key} at concurrency {c}")
                cpu_before = _tree_cpu_s(target.proc.pid)
                point = wrk(target.url + SIGN_PATH, body_path, script, c, seconds)
                # CPU the server spent per request: unlike requests per second, not changed by
                # load from elsewhere on the machine (it does include gunicorn's own work)
                point["server_cpu_ms_per_request"] = round(
                    (_tree_cpu_s(target.proc.pid) - cpu_before) * 1000
                    / max(1, point["requests"]), 3)
                points[key][c] = point
    out["service"] = {str(c): p for c, p in points["service"].items()}
    out["bare"] = {str(c): p for c, p in points["bare"].items()}
    out["ratio_rps"] = {str(c): round(points["service"][c]["rps"] / points["bare"][c]["rps"], 3)
                        for c in CONCURRENCY}
    # bare CPU per request over the service's: what the throughput ratio would be on a machine
    # with nothing else running (1.0 = a check costs nothing beyond serving the request)
    out["ratio_cpu"] = {
        str(c): round(points["bare"][c]["server_cpu_ms_per_request"]
                      / max(1e-9, points["service"][c]["server_cpu_ms_per_request"]), 3)
        for c in CONCURRENCY}
    return out


# --- self-fetch -----------------------------------------------------------------------------

@contextmanager
def sekmet_server() -> Iterator[Any]:
    """The sekmet FHIR server, started by the test suite's own fixture code."""
    from tests.support import services

    class _TempFactory:
        def mktemp(self, name: str) -> Path:
            return Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))

    # the fixture's own generator function, driven here outside pytest
    start: Callable[..., Iterator[Any]] = inspect.unwrap(services.sekmet)
    gen = start(_TempFactory())
    server = next(gen)
    try:
        yield server
    finally:
        with suppress(StopIteration):
            next(gen)


@contextmanager
def latency_proxy(upstream: str, workdir: Path) -> Iterator[str]:
    import requests

    port = free_port()
    log_path = workdir / "proxy.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "latency_proxy.py"), "--port", str(port),
             "--upstream", upstream, "--delay-ms", f"{PROXY_DELAY_MS:g}"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}{urlsplit(upstream).path.rstrip('/')}"
    try:
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError("the latency proxy exited: " + log_path.read_text()[-500:])
            with suppress(requests.RequestException):
                requests.get(base + "/metadata", timeout=2)
                break
            time.sleep(0.05)
        yield base
    finally:
        stop(proc)


def self_fetch_section(server: Server, proxy_base: str, token: str, now: datetime,
                       calls: int) -> dict[str, Any]:
    import requests

    from service.cds.discovery import prefetch_templates
    from service.fhir_input.fetch import FhirClient
    from service.knowledge import load
    from service.outbound.deadline import Deadline

    templates = prefetch_templates(load())
    queries = {k: v.replace("{{context.patientId}}", payloads.PATIENT_ID)
               for k, v in templates.items()}
    client = FhirClient(proxy_base, token, (proxy_base,), 5_000_000)

    def query_alone(key: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        if key == "patient":
            client.read(queries[key], Deadline(10))
            count = 1
        else:
            count = len(client.search(queries[key], Deadline(10)))
        return time.perf_counter() - t0, count

    def whole_call() -> tuple[float, requests.Response]:
        body = payloads.order_sign_call(now, templates, prefetch=False, fhir_server=proxy_base,
                                        token=token)
        t0 = time.perf_counter()
        resp = requests.post(server.url + SIGN_PATH, json=body, timeout=30)
        elapsed = time.perf_counter() - t0
        if resp.status_code != 200:
            raise RuntimeError(f"self-fetch call answered {resp.status_code}: {resp.text[:300]}")
        return elapsed, resp

    for _ in range(3):  # warm up connections and caches
        whole_call()
    # Rounds interleave the whole call with each query alone, so that load from elsewhere on
    # the machine falls on both alike.
    alone_times: dict[str, list[float]] = {k: [] for k in queries}
    counts: dict[str, int] = {}
    latencies = []
    unavailable = False
    cards: list[Any] = []
    together: list[float] = []
    pool = ThreadPoolExecutor(max_workers=len(queries))
    for _ in range(calls):
        for key in queries:
            elapsed, counts[key] = query_alone(key)
            alone_times[key].append(elapsed)
        # every query at once, from this process: what the machine (proxy, sekmet, client)
        # allows at best, without the service
        t0 = time.perf_counter()
        list(pool.map(query_alone, queries))
        together.append(time.perf_counter() - t0)
        elapsed, resp = whole_call()
        latencies.append(elapsed)
        unavailable = unavailable or "context.unavailable" in resp.text
        cards = [c.get("indicator") for c in resp.json()["cards"]]
    alone = {k: {"median_ms": ms(statistics.median(v)), "resources": counts[k]}
             for k, v in alone_times.items()}
    pool.shutdown()
    slowest_key = max(alone, key=lambda k: alone[k]["median_ms"])
    call_median = statistics.median(latencies)
    return {
        "ratio": round(call_median * 1000 / alone[slowest_key]["median_ms"], 3),
        "call_median_ms": ms(call_median),
        "call_p90_ms": ms(percentile(latencies, 90)),
        "calls": len(latencies),
        "slowest_query": slowest_key,
        "slowest_query_median_ms": alone[slowest_key]["median_ms"],
        "queries": len(queries),
        "all_queries_at_once_median_ms": ms(statistics.median(together)),
        # the same ratio for the fetch alone, no service involved: what this FHIR server and
        # proxy allow at best (a ratio target below it cannot be met on this set-up)
        "floor_ratio": round(statistics.median(together) * 1000
                             / alone[slowest_key]["median_ms"], 3),
        "queries_alone": alone,
        "proxy_delay_ms": PROXY_DELAY_MS,
        "some_data_unavailable": unavailable,
        "cards": cards,
        "note": "whole call measured at the client; each query alone with the service's own "
                "FHIR client through the same proxy; all_queries_at_once: the same client "
                "sending every query in parallel from the harness (the machine's floor for "
                "the fetch, the service not involved)",
    }


# --- batch ----------------------------------------------------------------------------------

def _cli() -> str:
    return str(BIN / "baclofen-check")


def ndjson_supported(workdir: Path, now: datetime) -> tuple[bool, str]:
    path = workdir / "probe.ndjson"
    lines = [json.dumps(payloads.ndjson_line(now, n)) for n in range(2)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = subprocess.run([_cli(), "check", str(path)], capture_output=True, text=True,
                         timeout=120, check=False)
    got = [ln for ln in out.stdout.splitlines() if ln.strip()]
    try:
        parsed = [json.loads(ln) for ln in got]
    except json.JSONDecodeError:
        return False, "the CLI does not answer NDJSON one line per input line"
    if len(parsed) == 2 and all(p.get("resourceType") == "Bundle" for p in parsed):
        return True, ""
    return False, (f"`baclofen-check check FILE.ndjson` answered {len(parsed)} line(s) for 2 "
                   f"input lines (exit {out.returncode})")


def write_ndjson(path: Path, lines: int, now: datetime) -> None:
    """``lines`` lines, each with its own patient id and one of five doses."""
    variants = [json.dumps(payloads.ndjson_line(now, n)) for n in range(5)]
    with open(path, "w", encoding="utf-8") as f:
        for n in range(lines):
            f.write(variants[n % 5].replace("bench-pat-" + str(n % 5) + '"',
                                            f'bench-pat-{n}"') + "\n")


def _memory_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a process in kB. VmHWM is the peak RSS since its exec; unlike
    getrusage's ru_maxrss it does not count the pages of the parent the child was forked from.
    """
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1])
    except OSError:
        return None
    if len(found) != 2:
        return None
    return found["VmRSS"], found["VmHWM"]


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: [0] is field 3 (state)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _tree(pid: int) -> list[int]:
    """A process and its direct children (gunicorn's workers, `check --jobs N`'s workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        fields = _stat_fields(entry) if entry.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            pids.append(int(entry))
    return pids


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its direct children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _tree(pid):
        fields = _stat_fields(p)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def _tree_memory_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) summed over a process and its direct children (the worker processes of
    `baclofen-check check --jobs N`)."""
    found = [m for m in (_memory_kb(p) for p in _tree(pid)) if m is not None]
    if not found:
        return None
    return sum(m[0] for m in found), sum(m[1] for m in found)


def batch_section(workdir: Path, lines: int, limit_s: float) -> dict[str, Any]:
    now = datetime.now(UTC)
    ok, why = ndjson_supported(workdir, now)
    if not ok:
        return {"available": False, "reason": why}
    path = workdir / "batch.ndjson"
    write_ndjson(path, lines, now)
    out_path = workdir / "batch-out.ndjson"
    log(f"batch: {lines} lines ({path.stat().st_size // 1_000_000} MB)")
    samples: list[tuple[float, int]] = []
    with open(out_path, "wb") as out, open(workdir / "batch-err.txt", "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([_cli(), "check", str(path)], stdout=out, stderr=err)
        timed_out = False
        peak_kb = 0
        while True:
            # os.wait4 reaps the child here; Popen.poll would reap it behind our back
            pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            mem = _tree_memory_kb(proc.pid)
            if mem is not None:
                samples.append((round(time.perf_counter() - started, 2), mem[0]))
                peak_kb = max(peak_kb, mem[1])
            if time.perf_counter() - started > limit_s:
                timed_out = True
                proc.kill()
                _pid, status, _usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.25)
        elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    answered = errors = 0
    with open(out_path, "rb") as f:
        for line in f:
            answered += 1
            if b'"resourceType": "OperationOutcome"' in line[:80]:
                errors += 1
    rss_mb = [s[1] / 1024 for s in samples]
    early = [r for (t, r) in zip([s[0] for s in samples], rss_mb, strict=True)
             if t >= elapsed * 0.1] or rss_mb
    growth = (rss_mb[-1] - early[0]) if rss_mb else float("nan")
    flat = bool(rss_mb) and growth <= max(10.0, 0.1 * early[0])
    step = max(1, len(samples) // 12)
    return {
        "available": True,
        "lines": lines,
        "answered_lines": answered,
        "error_lines": errors,
        "exit_code": proc.returncode,
        "timed_out": timed_out,
        "seconds": round(elapsed, 2),
        "checks_per_s": round(answered / elapsed, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "rss_mb_after_10pct": round(early[0], 1) if early else None,
        "rss_mb_at_end": round(rss_mb[-1], 1) if rss_mb else None,
        "rss_growth_mb": round(growth, 1),
        "memory_flat": flat,
        "rss_samples_s_mb": [(t, round(r / 1024, 1)) for t, r in samples[::step]],
        "note": "wall time of the whole command (start-up included), output written to a "
                "file; the CLI uses one process per core (--jobs default); memory is the sum "
                "over the CLI and its worker processes from /proc/<pid>/status every 0.25 s "
                "(peak = sum of VmHWM)",
    }


# --- report ---------------------------------------------------------------------------------

def headline(report: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    http = report.get("http") or {}
    sf = report.get("self_fetch") or {}
    batch = report.get("batch") or {}
    values: dict[str, Any] = {
        "http_ratio_c4": (http.get("ratio_rps") or {}).get("4"),
        "http_cpu_ratio_c4": (http.get("ratio_cpu") or {}).get("4"),  # no target: a reading
        "http_p99_ms_c4": ((http.get("service") or {}).get("4") or {}).get("p99_ms"),
        "self_fetch_ratio": sf.get("ratio"),
        "batch_checks_per_s": batch.get("checks_per_s"),
        "batch_memory_flat": batch.get("memory_flat"),
        "population_largest_s": (report.get("population") or {}).get("largest_seconds"),
        "population_memory_ratio": (report.get("population") or {}).get(
            "memory_ratio_largest_to_smallest"),
        "watch_p99_s": ((report.get("watch") or {}).get(
            "latency_event_to_detected_issue_s") or {}).get("p99"),
        "watch_correct": ((report.get("watch") or {}).get("checks") or {}).get("ok"),
    }
    checks: dict[str, Callable[[Any], bool]] = {
        "http_ratio_c4": lambda v: v >= 0.5,
        "http_p99_ms_c4": lambda v: v < 25,
        "self_fetch_ratio": lambda v: v <= 1.5,
        "batch_checks_per_s": lambda v: v >= 1000,
        "batch_memory_flat": lambda v: v is True,
        "population_largest_s": lambda v: v < 300,
        "population_memory_ratio": lambda v: v <= 1.2,
        "watch_p99_s": lambda v: v < 10,
        "watch_correct": lambda v: v is True,
    }
    targets = []
    for name, value in values.items():
        if name not in checks:
            continue
        met = None if value is None else bool(checks[name](value))
        targets.append({"name": name, "target": TARGETS[name], "measured": value,
                        "met": met if value is not None else "not measured"})
    return values, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="baclofen-check benchmark (make bench)")
    parser.add_argument("--quick", action="store_true",
                        help="short points and 5,000 batch lines (a smoke run, not the report)")
    parser.add_argument("--only", default="engine,http,self_fetch,batch,population,watch",
                        help="comma-separated sections to run")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per HTTP point")
    parser.add_argument("--batch-lines", type=int, default=None)
    parser.add_argument("--population-sizes", default=None,
                        help="patients per generated export (default 10000,100000)")
    args = parser.parse_args(argv)
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    engine_seconds = 1.0 if args.quick else 3.0
    batch_lines = args.batch_lines or (5000 if args.quick else 100_000)
    if "http" in sections and shutil.which("wrk") is None:
        print("bench: wrk is missing: install it with  apt-get install -y wrk", file=sys.stderr)
        return 2

    started = datetime.now(UTC)
    report: dict[str, Any] = {}
    meta: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "quick": args.quick,
        "note": "one run on this machine; other work on the machine makes the figures noisy",
    }
    workdir = Path(tempfile.mkdtemp(prefix="baclofen-bench-"))
    sections_out: dict[str, Any] = {}

    def section(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        """Run one part; a part that fails is reported as such, the others still run."""
        if name not in sections:
            return
        log(name)
        try:
            sections_out[name] = fn()
        except Exception as exc:  # noqa: BLE001 - a report with the failure beats no report
            log(f"{name} failed: {type(exc).__name__}: {exc}")
            sections_out[name] = {"available": False, "error": f"{type(exc).__name__}: {exc}"}

    try:
        section("engine", lambda: engine_section(engine_seconds, workdir))
        if sections & {"http", "self_fetch"}:
            with _fhir_side("self_fetch" in sections, workdir) as (proxy_base, token, sk_error):
                env = service_env(workdir, proxy_base)
                with gunicorn("service", None, env, workdir) as server:
                    section("http", lambda: http_section(server, workdir, seconds,
                                                         1.0 if args.quick else 2.0))
                    if proxy_base is None:
                        section("self_fetch", lambda: {"available": False, "reason": sk_error})
                    else:
                        section("self_fetch", lambda: self_fetch_section(
                            server, proxy_base, token or "", datetime.now(UTC),
                            10 if args.quick else 30))
        section("batch", lambda: batch_section(workdir, batch_lines,
                                               limit_s=300 if args.quick else 900))
        from bench.population_bench import population_section

        sizes = tuple(int(n) for n in (args.population_sizes or (
            "1000,5000" if args.quick else "10000,100000")).split(","))
        from bench.spark_bench import spark_section

        section("population", lambda: {
            **population_section(workdir, _cli(), _tree_memory_kb, sizes, log=log),
            # the same review on Spark local[2] and local[1], against the embedded engine
            "spark": spark_section(workdir, _cli(), 1000 if args.quick else 10_000, log=log)})
        from bench import watch_bench

        section("watch", lambda: watch_bench.watch_section(workdir, sys.modules[__name__], log))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    values, targets = headline(sections_out)
    report["headline"] = values
    report["targets"] = targets
    report["meta"] = meta
    report.update(sections_out)

    text = json.dumps(report, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    out_path.write_text(text + "\n", encoding="utf-8")
    for t in targets:
        mark = "met" if t["met"] is True else "NOT met" if t["met"] is False else "not measured"
        print(f"target {t['name']} {t['target']}: {t['measured']} -> {mark}", file=sys.stderr)
    print(f"report written to {out_path.relative_to(ROOT)}", file=sys.stderr)
    return 0


@contextmanager
def _fhir_side(wanted: bool, workdir: Path
               ) -> Iterator[tuple[str | None, str | None, str | None]]:
    """sekmet with its data and the latency proxy in front of it (or why not)."""
    if not wanted:
        yield None, None, "not requested"
        return
    from tests.support import services

    if not services.SEKMET.exists():
        yield None, None, "sekmet is not installed (make .venv-sekmet/.installed)"
        return
    log("starting sekmet and the latency proxy")
    with sekmet_server() as sk:
        now = datetime.now(UTC)
        for resource in payloads.server_resources(now):
            sk.put(resource)
        with latency_proxy(sk.base_url, workdir) as proxy_base:
            yield proxy_base, sk.token, None


if __name__ == "__main__":
    raise SystemExit(main())
