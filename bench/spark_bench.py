"""make bench part ``population``, Spark side: the same review on ``--engine spark``.

On one generated export (10,000 patients by default, bench/population.py) the command line
runs three times exactly as a user runs it, with the same ``--check-time``:

- ``--engine embedded --jobs 2`` (DuckDB and two worker processes);
- ``--engine spark --spark-master local[2]``;
- ``--engine spark --spark-master local[1]``.

Measured for each: wall time of the whole command (the JVM's start included), patients and
orders per second, the review's own seconds (summary.json: grouping, checking), and the peak
memory of all its processes (the command, the JVM, Spark's Python workers: the sum of VmHWM
over the whole process tree, sampled every 0.25 s); then the ratios: Spark ``local[2]`` to
the embedded engine (patients per second), and ``local[2]`` to ``local[1]`` (the speed-up from
the second core). Whether the engines wrote the same DetectedIssues (sorted) is recorded too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.population import write_export
from bench.population_bench import _run

PATIENTS = 10_000


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def tree_hwm_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) summed over a process and all its descendants (the JVM and its Python
    workers are grandchildren of the command)."""
    kids = _children()
    todo, rss, hwm = [pid], 0, 0
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            with open(f"/proc/{p}/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            continue
    return rss, hwm


def _issues(out: Path) -> list[str] | None:
    path = out / "DetectedIssue.ndjson"
    return sorted(path.read_text(encoding="utf-8").splitlines()) if path.exists() else None


def spark_section(workdir: Path, cli: str, patients: int = PATIENTS, limit_s: float = 1800,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return {"available": False, "reason": "PySpark is not installed (the [spark] extra)"}
    export = workdir / f"population-{patients}"
    if not (export / "manifest.json").exists():
        write_export(patients, export)
    runs: dict[str, Any] = {}
    for name, extra in (("embedded_jobs2", ["--engine", "embedded", "--jobs", "2"]),
                        ("spark_local2", ["--engine", "spark", "--spark-master", "local[2]"]),
                        ("spark_local1", ["--engine", "spark", "--spark-master", "local[1]"])):
        log(f"population/spark: {patients} patients, {name}")
        runs[name] = _run(cli, export, workdir / f"spark-bench-{name}", tree_hwm_kb, limit_s,
                          tuple(extra))
        runs[name]["command"] = " ".join(["baclofen-check review", *extra])
        if name.startswith("spark"):
            # the JVM and its Python workers are not waited for by the command: its CPU
            # reading would leave them out
            runs[name].pop("cpu_s", None)
            runs[name].pop("orders_per_cpu_s", None)
        log(f"population/spark: {name} in {runs[name]['seconds']} s, "
            f"peak {runs[name]['peak_hwm_sum_mb']} MB")
    emb, two, one = runs["embedded_jobs2"], runs["spark_local2"], runs["spark_local1"]

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
        if a.get("patients_per_s") and b.get("patients_per_s"):
            return round(a["patients_per_s"] / b["patients_per_s"], 3)
        return None

    same = _issues(workdir / "spark-bench-embedded_jobs2")
    return {
        "available": True,
        "patients": patients,
        "runs": runs,
        "spark_local2_to_embedded_speed": ratio(two, emb),
        "spark_local2_to_local1_speedup": ratio(two, one),
        "same_detected_issues": (same is not None and same == _issues(
            workdir / "spark-bench-spark_local2") == _issues(workdir / "spark-bench-spark_local1")),
        "note": "wall time of the whole command, the JVM start included for Spark (its own "
                "seconds in review_seconds); memory summed over the whole process tree (the "
                "command, the JVM, Spark's Python workers); one run each on a shared machine",
    }


if __name__ == "__main__":   # .venv/bin/python -m bench.spark_bench [PATIENTS]
    import json
    import shutil
    import sys
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="baclofen-spark-bench-"))
    try:
        print(json.dumps(spark_section(work, str(Path(sys.executable).parent / "baclofen-check"),
                                       int(sys.argv[1]) if len(sys.argv) > 1 else PATIENTS),
                         indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
