"""How long the worklist takes to answer as it grows (issue 20): N patients with one open
finding each, every one re-checked K times (N x K result rows), recorded the way the worker
records them; then ``GET /worklist.json`` (first page of 50, default filters) and one
resolve, through the app on SQLite. Prints one JSON line.

    .venv/bin/python bench/worklist_bench.py [--patients 1000] [--rechecks 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service import create_app  # noqa: E402
from service.watch.queue import Entry, FindingChange, WatchStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--rechecks", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"DATABASE_URL": f"sqlite:///{tmp}/w.sqlite3", "TESTING": True,
                          "API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False,
                          "WATCH_NOTIFY_TOKEN": "bench-notify-token-0123456789"})
        ws: WatchStore = app.extensions["watch"]
        t0 = datetime.now(UTC) - timedelta(days=3)
        for k in range(args.rechecks):
            for p in range(args.patients):
                at = t0 + timedelta(minutes=k * 10, seconds=p)
                sev = ("high", "moderate", "low")[p % 3]
                fid = f"f{p:06d}"
                issue = {"resourceType": "DetectedIssue", "severity": sev,
                         "code": {"text": "renal"}, "detail": f"CrCl {40 + p % 20} mL/min"}
                ws.record_result(
                    Entry(0, f"Patient/p{p}", 1, 1, at, [{"kind": "notification",
                          "resource": f"Observation/o{p}-{k}/_history/1",
                          "received": at.isoformat(), "lastUpdated": at.isoformat()}]),
                    "bench", at, [f"MedicationRequest/m{p}"],
                    [FindingChange(f"MedicationRequest/m{p}", fid, "renal.dose-band", sev,
                                   "new" if k == 0 else "unchanged", f"bc-{fid}", issue)])
        client = app.test_client()
        times = []
        for _ in range(10):
            start = time.perf_counter()
            resp = client.get("/worklist.json")
            times.append((time.perf_counter() - start) * 1000)
            assert resp.status_code == 200
        total = resp.get_json()["total"]
        start = time.perf_counter()
        done = client.post("/worklist/f000000/resolve", json={"outcome": "monitoring"})
        resolve_ms = (time.perf_counter() - start) * 1000
        assert done.status_code == 200, done.get_data(as_text=True)
    print(json.dumps({"patients": args.patients, "rechecks_each": args.rechecks,
                      "result_rows": args.patients * args.rechecks, "listed": total,
                      "worklist_json_ms": {"median": round(statistics.median(times), 1),
                                           "max": round(max(times), 1)},
                      "resolve_ms": round(resolve_ms, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
