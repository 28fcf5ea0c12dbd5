"""Soak test: drive the served app (gunicorn, several workers) with a realistic mix of native
and CDS Hooks calls on loopback, then check zero errors, bounded memory and that every
answered call was recorded in the store; optionally restart the server under load and check
that no answered call was lost.

Not part of `make test`. Run it with `make soak` (10 minutes) or, for a short run,
`.venv/bin/python scripts/soak.py --duration 60 --restart`.
Traffic goes only to 127.0.0.1; the loop is bounded in time and in requests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.builders import (  # noqa: E402 - the tests' builders make realistic payloads
    bundle,
    dosage,
    order,
    parameters,
    patient,
)

TOKEN = "soak-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def creatinine(value: float) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"scr-{uuid.uuid4().hex[:8]}",
            "status": "final", "subject": {"reference": "Patient/pat-1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
            "effectiveDateTime": "2026-11-20T08:00:00Z",
            "valueQuantity": {"value": value, "unit": "mg/dL",
                              "system": "http://unitsofmeasure.org", "code": "mg/dL"}}


def weight(kg: float) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"wt-{uuid.uuid4().hex[:8]}",
            "status": "final", "subject": {"reference": "Patient/pat-1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "effectiveDateTime": "2026-11-20T08:00:00Z",
            "valueQuantity": {"value": kg, "unit": "kg",
                              "system": "http://unitsofmeasure.org", "code": "kg"}}


def native_call(rng: random.Random) -> tuple[str, dict[str, Any], dict[str, str]]:
    o = order(dosage(rng.choice([5, 10, 20, 30]), "mg", rng.choice([2, 3, 4])),
              id=f"soak-{uuid.uuid4().hex}")
    body = parameters(o, pat=patient(f"{rng.randint(1940, 2005)}-03-04"),
                      context=[creatinine(rng.choice([0.8, 1.4, 2.5])), weight(70)])
    return "/MedicationRequest/$check", body, {"Content-Type": "application/fhir+json",
                                              "Authorization": f"Bearer {TOKEN}"}


def cds_call(rng: random.Random) -> tuple[str, dict[str, Any], dict[str, str]]:
    o = order(dosage(rng.choice([5, 10, 25]), "mg", 3), id=f"soak-{uuid.uuid4().hex}")
    body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": "pat-1",
                        "draftOrders": bundle(o)},
            "prefetch": {"patient": patient("1950-03-04"),
                         "renal": bundle(creatinine(1.6), weight(64), type_="searchset")}}
    return "/cds-services/baclofen-order-sign", body, {"Content-Type": "application/json"}


class Server:
    def __init__(self, port: int, db_url: str, workers: int, tmp: Path):
        self.port, self.db_url, self.workers, self.tmp = port, db_url, workers, tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "API_REQUIRE_AUTH": "true", "API_TOKENS": TOKEN,
               "CDS_REQUIRE_JWT": "false", "DATABASE_URL": self.db_url}
        log = open(self.tmp / "server.log", "ab")  # noqa: SIM115 - kept open for the child
        self.proc = subprocess.Popen(  # noqa: S603 - our own console script
            [str(ROOT / ".venv" / "bin" / "baclofen-check"), "serve", "--bind",
             f"127.0.0.1:{self.port}", "--workers", str(self.workers)],
            env=env, stdout=log, stderr=log, cwd=self.tmp)
        for _ in range(200):
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise SystemExit("the server did not become ready; see server.log")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # graceful: in-flight requests finish
            self.proc.wait(timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        """Resident memory of the master and its workers, in MB."""
        if not self.proc:
            return 0.0
        pids = [self.proc.pid]
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],  # noqa: S607
                             capture_output=True, text=True, check=False).stdout
        pids += [int(p) for p in out.split()]
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--restart", action="store_true",
                    help="restart the server half-way through, under load")
    ap.add_argument("--max-requests", type=int, default=2_000_000)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="baclofen-soak-"))
    db_url = f"sqlite:///{tmp}/audit.sqlite3"
    server = Server(free_port(), db_url, args.workers, tmp)
    server.start()
    stop_at = time.monotonic() + args.duration
    answered = Counter()
    errors: list[str] = []
    refused_during_restart = 0
    restarting = threading.Event()
    lock = threading.Lock()
    sent = 0

    def worker(seed: int) -> None:
        nonlocal sent, refused_during_restart
        rng = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < stop_at:
            with lock:
                if sent >= args.max_requests:
                    return
                sent += 1
            path, body, headers = (native_call if rng.random() < 0.5 else cds_call)(rng)
            try:
                resp = session.post(server.url + path, data=json.dumps(body), headers=headers,
                                    timeout=10)
            except requests.RequestException as exc:
                if restarting.is_set():
                    with lock:
                        refused_during_restart += 1
                    time.sleep(0.05)
                    continue
                errors.append(f"{path}: {type(exc).__name__}")
                continue
            if resp.status_code != 200:
                errors.append(f"{path}: HTTP {resp.status_code} {resp.text[:200]}")
                continue
            with lock:
                answered[path] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(args.threads)]
    for t in threads:
        t.start()
    memory: list[float] = []
    restarted = False
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        memory.append(server.rss_mb())
        if args.restart and not restarted and time.monotonic() > stop_at - args.duration / 2:
            restarting.set()
            server.stop()
            server.start()
            restarting.clear()
            restarted = True
    server.stop()

    sys.path.insert(0, str(ROOT))
    from service.store import Store

    recorded = Store(db_url).counts()["checks"]
    total = sum(answered.values())
    first = memory[: max(1, len(memory) // 4)]
    last = memory[-max(1, len(memory) // 4):]
    growth = (sum(last) / len(last)) / (sum(first) / len(first)) if memory else 1.0
    report = {
        "duration_s": args.duration, "answered": dict(answered), "errors": len(errors),
        "first_errors": errors[:5], "recorded_checks": recorded,
        "refused_while_restarting": refused_during_restart, "restarted": restarted,
        "rss_mb_first_quarter": round(sum(first) / len(first), 1) if memory else None,
        "rss_mb_last_quarter": round(sum(last) / len(last), 1) if memory else None,
        "rss_growth_ratio": round(growth, 3),
    }
    ok = not errors and recorded >= total and growth < 1.5
    report["result"] = "pass" if ok else "fail"
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
