"""NDJSON batch benchmark: `baclofen-check check` on a 100,000-line file.

Prints checks per second and the peak memory (max RSS) of the CLI process. Usage:
    .venv/bin/python bench/ndjson.py [LINES]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def line(n: int) -> str:
    dose = (5, 10, 20, 40)[n % 4]
    return json.dumps({"resourceType": "Parameters", "parameter": [
        {"name": "order", "resource": {
            "resourceType": "MedicationRequest", "id": f"o{n}", "status": "draft",
            "intent": "order", "subject": {"reference": f"Patient/p{n}"},
            "authoredOn": "2026-11-25T09:00:00Z",
            "medicationCodeableConcept": {"coding": [{
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1292",
                "display": "baclofen"}], "text": "baclofen 10 MG Oral Tablet"},
            "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {
                "value": dose, "unit": "mg", "system": "http://unitsofmeasure.org",
                "code": "mg"}}], "timing": {"repeat": {"frequency": 3, "period": 1,
                                                        "periodUnit": "d"}}}]}},
        {"name": "patient", "resource": {"resourceType": "Patient", "id": f"p{n}",
                                         "birthDate": "1970-05-01", "gender": "male"}},
        {"name": "context", "resource": {
            "resourceType": "Observation", "id": f"cr{n}", "status": "final",
            "subject": {"reference": f"Patient/p{n}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
            "effectiveDateTime": "2026-11-20T08:00:00Z",
            "valueQuantity": {"value": 1.1, "unit": "mg/dL",
                              "system": "http://unitsofmeasure.org", "code": "mg/dL"}}},
        {"name": "checkTime", "valueDateTime": "2026-11-25T10:00:00Z"},
    ]})


def main() -> int:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.ndjson"
        with path.open("w") as f:
            for n in range(lines):
                f.write(line(n) + "\n")
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "service.cli", "check", str(path)], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        elapsed = time.perf_counter() - started
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        size_mb = path.stat().st_size / 1e6
    print(proc.stderr.strip().splitlines()[-1])
    print(f"lines {lines}, file {size_mb:.1f} MB, {elapsed:.1f} s, "
          f"{lines / elapsed:.0f} checks/s, peak memory {peak_kb / 1024:.0f} MB")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
