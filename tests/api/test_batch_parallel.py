"""`baclofen-check check FILE.ndjson --jobs N`: several processes give exactly the output of
one process, in input order, with the same line numbers and summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cli(path: Path, jobs: int) -> tuple[str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "check", "--jobs", str(jobs),
         "--check-time", "2026-11-25T10:00:00Z", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr   # the file holds bad lines on purpose
    return proc.stdout, proc.stderr


@pytest.mark.parametrize("jobs", [2, 3])
def test_parallel_check_equals_one_process(tmp_path: Path, jobs: int) -> None:
    good = json.loads((ROOT / "fixtures" / "params-overdose.json").read_text())
    micro = json.loads((ROOT / "fixtures" / "params-microgram.json").read_text())
    lines: list[str] = []
    for i in range(700):   # several windows of 256 lines, and a partial last one
        lines.append(json.dumps(good if i % 2 else micro))
        if i % 300 == 5:
            lines.append("{not json")
        if i % 250 == 1:
            lines.append("")
    path = tmp_path / "batch.ndjson"
    path.write_text("\n".join(lines) + "\n")
    one_out, one_err = run_cli(path, 1)
    many_out, many_err = run_cli(path, jobs)
    assert many_out == one_out
    assert many_err.strip().splitlines()[-1] == one_err.strip().splitlines()[-1]
    rows = many_out.splitlines()
    assert len(rows) == 703   # one output per non-blank line
    bad = [json.loads(r) for r in rows if '"OperationOutcome"' in r[:40]]
    assert [b["issue"][0]["diagnostics"].split(":")[0] for b in bad] == [
        "line 7", "line 308", "line 609"]
    assert "checked 700, errors 3" in many_err
