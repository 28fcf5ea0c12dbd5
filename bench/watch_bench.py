"""make bench part ``watch``, and the watch fault run.

Both start the sekmet FHIR server (its defaults: three delivery attempts, then ``error``), the
service under gunicorn exactly as ``baclofen-check serve`` starts it (the receiver) with
WATCH_NOTIFY_TOKEN, and ``baclofen-check watch work`` as a process of its own; they load 200
patients of 71 years and 70 kg on baclofen 30 to 60 mg/day with a creatinine of 0.8 mg/dL
(CrCl 84 mL/min: no renal cap), register the Subscriptions with ``baclofen-check watch
subscribe``, then post 1,000 new creatinine Observations as fast as the server takes them (8
clients): five per patient, the last of the 100 patients on 45 to 60 mg/day a 1.5 mg/dL
(CrCl 44.7 mL/min: the 40 mg/day cap of the moderate band), all others 0.75 or 0.8.

- bench (``watch_section``): event-to-DetectedIssue latency per moving patient (and
  event-to-worklist-entry, issue 20), from the
  1.5 mg/dL Observation's ``meta.lastUpdated`` to its ``renal.dose-band`` DetectedIssue's
  (both on the server's clock), p50/p95/p99; re-checks per second (from the first to the last
  re-check recorded); queue depth sampled every 0.5 s; the worker's memory (VmRSS sampled, and
  its peak VmHWM); and the correctness checks: each of the 100 patients has its finding, none
  of the other 100 has it, no DetectedIssue has been written twice.
- faults (``python bench/watch_bench.py --faults``): the same burst with the worker killed by
  SIGKILL in the middle and started again, and the receiver stopped for 30 s in the middle
  (the Subscriptions go to ``error``; the worker requests them again and catches up); then the
  same checks: every patient re-checked after its last event, each expected finding on the
  server exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PATIENTS = 200
MOVING = 100
EVENTS = 1000
POSTERS = 8
NOTIFY_TOKEN = "bench-watch-" + uuid.uuid4().hex
TARGET_P99_S = 10.0
RULE_SYSTEM = "urn:baclofen-check:rule"


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _stamp(value: Any) -> datetime:
    """A time read back from the store by plain SQL (SQLite gives text)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[k], 3)


@dataclass
class Fhir:
    base: str
    token: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/fhir+json",
                "Content-Type": "application/fhir+json"}

    def put(self, resource: dict[str, Any], session: Any = None) -> dict[str, Any]:
        import requests

        http = session or requests
        for attempt in range(5):
            try:
                resp = http.put(f"{self.base}/{resource['resourceType']}/{resource['id']}",
                                json=resource, headers=self.headers(), timeout=30)
            except requests.RequestException:
                if attempt == 4:
                    raise
                time.sleep(0.2)
                continue
            if resp.status_code in {200, 201}:
                return dict(resp.json())
            if attempt == 4:
                raise RuntimeError(f"PUT {resource['resourceType']}: {resp.status_code}")
            time.sleep(0.2)
        raise RuntimeError("unreachable")

    def transaction(self, resources: list[dict[str, Any]]) -> None:
        import requests

        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": r, "request": {"method": "PUT",
                                        "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources]}
        resp = requests.post(self.base, json=bundle, headers=self.headers(), timeout=120)
        if resp.status_code != 200:
            raise RuntimeError(f"seeding transaction: {resp.status_code} {resp.text[:300]}")

    def search_all(self, query: str) -> list[dict[str, Any]]:
        import requests

        url: str | None = f"{self.base}/{query}"
        out: list[dict[str, Any]] = []
        while url:
            page = requests.get(url, headers=self.headers(), timeout=60).json()
            out += [e["resource"] for e in page.get("entry", []) if "resource" in e]
            url = next((link["url"] for link in page.get("link", [])
                        if link.get("relation") == "next"), None)
        return out


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}


def _obs(oid: str, pid: str, code: str, value: float, unit: str, when: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueQuantity": _quantity(value, unit)}


@dataclass
class Cohort:
    tag: str
    patients: list[str]
    orders: dict[str, str]          # patient id -> order id
    moving: set[str]                # the patients whose last lab moves them to a lower band
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (pid, obs)
    last_event: dict[str, datetime] = field(default_factory=dict)   # on the server's clock


def cohort(now: datetime) -> tuple[Cohort, list[dict[str, Any]]]:
    """The 200 patients (resources to load) and the 1,000 events to post, in posting order."""
    tag = uuid.uuid4().hex[:6]
    today = now.date()
    c = Cohort(tag, [], {}, set())
    seed: list[dict[str, Any]] = []
    for n in range(PATIENTS):
        pid, oid = f"wp-{tag}-{n}", f"wo-{tag}-{n}"
        moving = n < MOVING
        # the moving ones on 45-60 mg/day (over the moderate band's cap of 40), the others on
        # 30-60 mg/day
        per_dose = (15 + 5 * (n % 2)) if moving else (10 + 5 * (n % 3))
        c.patients.append(pid)
        c.orders[pid] = oid
        if moving:
            c.moving.add(pid)
        seed += [
            {"resourceType": "Patient", "id": pid, "gender": "male",
             "birthDate": f"{today.year - 71}-01-01"},
            _obs(f"ww-{tag}-{n}", pid, "29463-7", 70, "kg", str(today - timedelta(days=20))),
            _obs(f"wc-{tag}-{n}-0", pid, "2160-0", 0.8, "mg/dL",
                 str(today - timedelta(days=40))),
            {"resourceType": "MedicationRequest", "id": oid, "status": "active",
             "intent": "order", "subject": {"reference": f"Patient/{pid}"},
             "authoredOn": f"{today - timedelta(days=90)}T08:00:00Z",
             "medicationCodeableConcept": {"coding": [{
                 "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1292",
                 "display": "baclofen"}], "text": "baclofen 5 MG Oral Tablet"},
             "dosageInstruction": [{"timing": {"repeat": {"frequency": 3, "period": 1,
                                                          "periodUnit": "d"}},
                                    "doseAndRate": [{"doseQuantity": _quantity(per_dose,
                                                                               "mg")}]}]},
        ]
    per_patient = EVENTS // PATIENTS
    for k in range(per_patient):
        for n, pid in enumerate(c.patients):
            last = k == per_patient - 1
            value = 1.5 if (last and pid in c.moving) else 0.75 + 0.05 * ((n + k) % 2)
            when = (now - timedelta(minutes=per_patient - k)).isoformat(timespec="seconds")
            c.events.append((pid, _obs(f"wc-{tag}-{n}-{k + 1}", pid, "2160-0", value, "mg/dL",
                                       when)))
    return c, seed


# --- processes --------------------------------------------------------------------------------

@dataclass
class Stack:
    fhir: Fhir
    env: dict[str, str]
    receiver_port: int
    workdir: Path
    database: str
    receiver: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None


def _cli() -> str:
    return str(Path(sys.executable).parent / "baclofen-check")


def start_receiver(stack: Stack, helpers: Any) -> None:
    argv, added = helpers.serve_command(f"127.0.0.1:{stack.receiver_port}")
    log = open(stack.workdir / "receiver.log", "ab")  # noqa: SIM115 - the process keeps it
    stack.receiver = subprocess.Popen(argv, cwd=ROOT, env={**stack.env, **added}, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
    helpers._wait_ready(helpers.Server("receiver", f"http://127.0.0.1:{stack.receiver_port}",
                                       stack.receiver, stack.workdir / "receiver.log", argv),
                        "/healthz")


def start_worker(stack: Stack, threads: int = 4) -> None:
    log = open(stack.workdir / "worker.log", "ab")  # noqa: SIM115 - the process keeps it
    stack.worker = subprocess.Popen([_cli(), "watch", "work", "--threads", str(threads)],
                                    cwd=ROOT, env=stack.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def stack(workdir: Path, helpers: Any, check_s: float) -> Iterator[Stack]:
    from tests.support import services

    home = Path(tempfile.mkdtemp(prefix="bench-watch-sekmet-"))
    port = services.free_port()
    auth = f"  types: [bearer]\n  tokens: [{services.SEKMET_TOKEN}]\n"
    with services.running_sekmet(home, port, auth):
        fhir = Fhir(f"http://127.0.0.1:{port}/fhir", services.SEKMET_TOKEN)
        receiver_port = services.free_port()
        database = f"sqlite:///{workdir / 'watch.sqlite3'}"
        env = helpers.service_env(workdir)
        env.update({"FHIR_SERVER_URL": fhir.base, "FHIR_SERVER_TOKEN": fhir.token,
                    "PUBLIC_BASE_URL": f"http://127.0.0.1:{receiver_port}",
                    "WATCH_NOTIFY_TOKEN": NOTIFY_TOKEN, "WATCH_CHECK_S": str(check_s),
                    "DATABASE_URL": database, "SPOOL_DIR": str(workdir / "spool")})
        s = Stack(fhir, env, receiver_port, workdir, database)
        try:
            yield s
        finally:
            kill(s.worker)
            kill(s.receiver)


def subscribe(s: Stack, remove: bool = False) -> dict[str, Any]:
    out = subprocess.run([_cli(), "watch", "subscribe", *(["--remove"] if remove else [])],
                         cwd=ROOT, env=s.env, capture_output=True, check=True, timeout=120)
    return dict(json.loads(out.stdout))


# --- the burst and what it should lead to ------------------------------------------------------

def post_burst(s: Stack, c: Cohort, during: Callable[[int], None] | None = None
               ) -> dict[str, datetime]:
    """Post the events with POSTERS clients; ``during(n)`` is called by the poster after the
    n-th event. Returns, per moving patient, the server's lastUpdated of its 1.5 mg/dL lab
    (and keeps every patient's last one in ``c.last_event``)."""
    import requests

    created: dict[str, datetime] = {}
    counter = [0]
    lock = threading.Lock()
    sessions = threading.local()

    def post(item: tuple[str, dict[str, Any]]) -> None:
        pid, obs = item
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
        stored = s.fhir.put(obs, sessions.s)
        at = _parse(stored["meta"]["lastUpdated"])
        if obs["valueQuantity"]["value"] == 1.5:
            created[pid] = at
        with lock:
            c.last_event[pid] = max(at, c.last_event.get(pid, at))
        with lock:
            counter[0] += 1
            n = counter[0]
        if during is not None:
            during(n)

    # every patient's events in order: patient n's k-th event is posted before its k+1-th
    with ThreadPoolExecutor(POSTERS) as pool:
        per_patient = EVENTS // PATIENTS
        for k in range(per_patient):
            list(pool.map(post, c.events[k * PATIENTS:(k + 1) * PATIENTS]))
    return created


def findings_on_server(s: Stack, c: Cohort) -> dict[str, list[dict[str, Any]]]:
    """patient id -> its DetectedIssues on the server."""
    out: dict[str, list[dict[str, Any]]] = {pid: [] for pid in c.patients}
    for di in s.fhir.search_all("DetectedIssue?_count=1000"):
        ref = str((di.get("patient") or {}).get("reference", ""))
        pid = ref.split("/")[-1]
        if pid in out:
            out[pid].append(di)
    return out


def rule_of(di: dict[str, Any]) -> str:
    return next((str(i.get("value")) for i in di.get("identifier", [])
                 if i.get("system") == RULE_SYSTEM), "")


def verify(s: Stack, c: Cohort, since: datetime) -> dict[str, Any]:
    """The correctness checks of both runs."""
    from sqlalchemy import create_engine, text

    by_patient = findings_on_server(s, c)
    renal = {pid: [d for d in dis if rule_of(d) == "renal.dose-band" and d["status"] == "final"]
             for pid, dis in by_patient.items()}
    missing = sorted(pid for pid in c.moving if len(renal[pid]) != 1)
    wrong = sorted(pid for pid in c.patients if pid not in c.moving and renal[pid])
    rewritten = sorted(d["id"] for dis in by_patient.values() for d in dis
                       if d["status"] == "final" and d["meta"]["versionId"] != "1")
    engine = create_engine(s.database)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT patient_ref, MAX(time) FROM watch_rechecks WHERE outcome = 'done' "
            "GROUP BY patient_ref")).all()
        depth = dict(conn.execute(text(
            "SELECT state, COUNT(*) FROM watch_queue GROUP BY state")).all())
    engine.dispose()
    # a patient counts as re-checked when a re-check finished after its last event was
    # written on the server (the same host's clock)
    rechecked = {str(p).split("/")[-1] for p, t in rows if t is not None and (
        str(p).split("/")[-1] not in c.last_event
        or _stamp(t).replace(tzinfo=UTC) >= c.last_event[str(p).split("/")[-1]])}
    not_rechecked = sorted(set(c.patients) - rechecked)
    return {"patients_with_expected_finding": MOVING - len(missing),
            "expected_findings_missing": missing[:10],
            "unexpected_findings": wrong[:10],
            "detected_issues_rewritten": rewritten[:10],
            "patients_not_rechecked": not_rechecked[:10],
            "queue_left": depth,
            "ok": not missing and not wrong and not rewritten and not not_rechecked
            and not depth}


def wait_settled(s: Stack, c: Cohort, limit_s: float, sample: Callable[[], None]) -> bool:
    """Until every moving patient has its finding and the queue is empty (or the limit)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(s.database)
    end = time.monotonic() + limit_s
    try:
        while time.monotonic() < end:
            sample()
            with engine.connect() as conn:
                left = conn.execute(text("SELECT COUNT(*) FROM watch_queue")).scalar()
            if not left:
                by_patient = findings_on_server(s, c)
                if all(any(rule_of(d) == "renal.dose-band" for d in by_patient[p])
                       for p in c.moving):
                    return True
            time.sleep(0.5)
    finally:
        engine.dispose()
    return False


def receiver_ms(workdir: Path) -> dict[str, Any]:
    """How long the receiver took to answer the notifications (gunicorn's access log)."""
    import re

    took: list[float] = []
    statuses: dict[str, int] = {}
    path = workdir / "receiver.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    for m in re.finditer(r'"access":"(PUT|POST) /subscriptions/notify\S* (\d{3}) (\d+)ms"', text):
        statuses[m.group(2)] = statuses.get(m.group(2), 0) + 1
        took.append(float(m.group(3)))
    return {"n": len(took), "p50": percentile(took, 50), "p99": percentile(took, 99),
            "max": percentile(took, 100), "statuses": statuses}


# --- the bench ----------------------------------------------------------------------------------

def watch_section(workdir: Path, helpers: Any, log: Callable[[str], None],
                  limit_s: float = 600) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    from tests.support import services

    if not services.SEKMET.exists():
        return {"available": False, "reason": "sekmet is not installed"}
    now = datetime.now(UTC)
    c, seed = cohort(now)
    with stack(workdir, helpers, check_s=60) as s:
        log("watch: loading 200 patients")
        for start in range(0, len(seed), 200):
            s.fhir.transaction(seed[start:start + 200])
        start_receiver(s, helpers)
        subs = subscribe(s)
        start_worker(s)
        assert s.worker is not None
        depth_samples: list[tuple[float, int]] = []
        mem_peak = [0, 0]
        t0 = time.monotonic()
        engine = create_engine(s.database)

        def sample() -> None:
            with engine.connect() as conn:
                n = conn.execute(text("SELECT COUNT(*) FROM watch_queue")).scalar() or 0
            depth_samples.append((round(time.monotonic() - t0, 1), int(n)))
            mem = helpers._tree_memory_kb(s.worker.pid) if s.worker else None
            if mem:
                mem_peak[0], mem_peak[1] = max(mem_peak[0], mem[0]), max(mem_peak[1], mem[1])

        stop_sampling = threading.Event()

        def sampler() -> None:
            while not stop_sampling.is_set():
                with suppress(Exception):
                    sample()
                stop_sampling.wait(0.5)

        threading.Thread(target=sampler, daemon=True).start()
        log("watch: posting 1,000 creatinine results")
        posted_at = time.monotonic()
        created = post_burst(s, c)
        post_s = time.monotonic() - posted_at
        settled = wait_settled(s, c, limit_s, lambda: None)
        stop_sampling.set()
        by_patient = findings_on_server(s, c)
        latencies = []
        for pid, at in created.items():
            found = [d for d in by_patient[pid] if rule_of(d) == "renal.dose-band"]
            if found:
                latencies.append((_parse(found[0]["meta"]["lastUpdated"]) - at).total_seconds())
        with engine.connect() as conn:
            span = conn.execute(text("SELECT MIN(time), MAX(time), COUNT(*) FROM "
                                     "watch_rechecks WHERE outcome = 'done'")).one()
            # the worklist entry appears with the re-check's result (issue 20): the first
            # "new" row of the patient's renal.dose-band finding (the worker's clock, the
            # same host as the server's)
            entered = dict(conn.execute(text(
                "SELECT patient_ref, MIN(time) FROM watch_findings WHERE rule_id = "
                "'renal.dose-band' AND change = 'new' GROUP BY patient_ref")).all())
        engine.dispose()
        # (stored as naive UTC)
        to_worklist = [(_stamp(entered[f"Patient/{pid}"]).replace(tzinfo=UTC) - at)
                       .total_seconds() for pid, at in created.items()
                       if f"Patient/{pid}" in entered]
        rechecks = int(span[2] or 0)
        seconds = (_stamp(span[1]) - _stamp(span[0])).total_seconds() if rechecks > 1 \
            else None
        checks = verify(s, c, now)
    return {
        "available": True, "settled": settled,
        "subscriptions": len(subs["created"]),
        "events_posted": len(c.events), "post_seconds": round(post_s, 2),
        "events_per_s_taken_by_server": round(len(c.events) / post_s, 1),
        "latency_event_to_detected_issue_s": {
            "n": len(latencies), "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95), "p99": percentile(latencies, 99),
            "max": percentile(latencies, 100)},
        "latency_event_to_worklist_entry_s": {
            "n": len(to_worklist), "p50": percentile(to_worklist, 50),
            "p95": percentile(to_worklist, 95), "p99": percentile(to_worklist, 99),
            "max": percentile(to_worklist, 100)},
        "rechecks": rechecks,
        "rechecks_per_s": round(rechecks / seconds, 1) if seconds else None,
        "queue_depth_over_time": depth_samples[::max(1, len(depth_samples) // 60)],
        "queue_depth_max": max((d for _, d in depth_samples), default=0),
        "worker_memory_mb": {"peak_rss_sampled": round(mem_peak[0] / 1024, 1),
                             "peak_hwm": round(mem_peak[1] / 1024, 1)},
        "receiver_answer_ms": receiver_ms(workdir),
        "checks": checks,
        "target_p99_s": TARGET_P99_S,
    }


# --- the fault run ------------------------------------------------------------------------------

def fault_run(workdir: Path, helpers: Any, log: Callable[[str], None],
              down_s: float = 30.0, limit_s: float = 900) -> dict[str, Any]:
    """The burst with the worker SIGKILLed at a quarter and restarted, and the receiver down
    for ``down_s`` from the half; WATCH_CHECK_S 10 so that the check comes soon after."""
    now = datetime.now(UTC)
    c, seed = cohort(now)
    events: list[str] = []
    with stack(workdir, helpers, check_s=10) as s:
        for start in range(0, len(seed), 200):
            s.fhir.transaction(seed[start:start + 200])
        start_receiver(s, helpers)
        subscribe(s)
        start_worker(s)
        lock = threading.Lock()
        marks = {"kill": EVENTS // 4, "down": EVENTS // 2}

        def during(n: int) -> None:
            with lock:
                if n == marks["kill"]:
                    marks["kill"] = -1
                    log("faults: SIGKILL to the worker")
                    kill(s.worker, signal.SIGKILL)
                    events.append(f"worker killed after event {n}")
                    start_worker(s)
                    events.append("worker started again")
                if n == marks["down"]:
                    marks["down"] = -1
                    log("faults: receiver down")
                    kill(s.receiver)
                    stopped = time.monotonic()
                    events.append(f"receiver stopped after event {n}")

                    def back() -> None:
                        time.sleep(down_s)
                        start_receiver(s, helpers)
                        events.append(f"receiver answering again after "
                                      f"{time.monotonic() - stopped:.0f} s (stopped {down_s:g} s, "
                                      "then gunicorn's start)")
                        log("faults: receiver up again")

                    threading.Thread(target=back, daemon=True).start()

        post_burst(s, c, during)
        errored = [sub for sub in s.fhir.search_all(
            "Subscription?_tag=urn:baclofen-check:watch|subscription")
            if sub.get("status") == "error"]
        events.append(f"{len(errored)} Subscription(s) in error after the burst")
        settled = wait_settled(s, c, limit_s, lambda: None)
        time.sleep(12)  # one more WATCH_CHECK_S period: the check re-requests and catches up
        wait_settled(s, c, 60, lambda: None)
        checks = verify(s, c, now)
        active = [sub.get("status") for sub in s.fhir.search_all(
            "Subscription?_tag=urn:baclofen-check:watch|subscription")]
    worker_log = (workdir / "worker.log").read_text(errors="replace")
    return {"settled": settled, "events": events, "subscription_status_after": active,
            "subscriptions_rerequested": worker_log.count('"watch-subscription-rerequested"'),
            "catch_ups_that_queued": worker_log.count('"watch-catch-up"'),
            "rechecks_failed_and_retried": worker_log.count('"watch-recheck-failed"'),
            "receiver_answer_ms": receiver_ms(workdir),
            "checks": checks}


def _main() -> int:
    import argparse

    from bench import run as helpers

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", action="store_true", help="the fault run instead")
    parser.add_argument("--down-s", type=float, default=30.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="baclofen-watch-"))
    helpers._quiet_logs(workdir)
    result = fault_run(workdir, helpers, helpers.log, args.down_s) if args.faults else \
        watch_section(workdir, helpers, helpers.log)
    print(json.dumps(result, indent=2, default=str))
    ok = result.get("checks", {}).get("ok")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(_main())
