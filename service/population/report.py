"""``report.html`` of a population review: the summary as charts, one self-contained page.

Charts are drawn by matplotlib (its object API, no pyplot state) and written into the page
as inline SVG with text kept as text; the page loads no script, style or font from anywhere.
Patients and findings are the ids and the DetectedIssue texts of the review's own output.
"""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import Any

from .check import SEVERITIES

COLOURS = {"high": "#c0392b", "moderate": "#e67e22", "low": "#2e86c1", "none": "#7f8c8d"}
BAND_LABELS = {"normal": "normal", "mild": "mild", "moderate": "moderate", "severe": "severe",
               "esrd": "< 15 (ESRD)", "dialysis": "dialysis", "no value": "no value"}


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _figure(width: float, height: float) -> Any:
    import matplotlib  # lazy: matplotlib is heavy, and only the report draws

    matplotlib.rcParams["svg.fonttype"] = "none"     # text stays text (searchable)
    matplotlib.rcParams["svg.hashsalt"] = "baclofen-check"  # the same ids on every run
    from matplotlib.figure import Figure  # after the rcParams above are set

    return Figure(figsize=(width, height), dpi=100)


def findings_chart(by_rule: dict[str, dict[str, int]]) -> str:
    """Findings by rule, stacked by severity."""
    rules = sorted(by_rule, key=lambda r: sum(by_rule[r].values()))
    fig = _figure(8, max(2.0, 0.38 * len(rules) + 1.2))
    ax = fig.add_subplot()
    left = [0] * len(rules)
    for severity in SEVERITIES:
        values = [by_rule[r].get(severity, 0) for r in rules]
        ax.barh(rules, values, left=left, color=COLOURS[severity], label=severity)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("findings")
    ax.set_title("Findings by rule and severity")
    if rules:
        ax.legend(loc="lower right", frameon=False)
    else:
        ax.text(0.5, 0.5, "no findings", ha="center", va="center", transform=ax.transAxes)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def band_dose_chart(points: list[tuple[str, float, str]], bands: list[str]) -> str:
    """Each patient on oral baclofen: kidney band against daily dose, coloured by the most
    severe finding."""
    fig = _figure(8, 4.2)
    ax = fig.add_subplot()
    index = {b: i for i, b in enumerate(bands)}
    for worst in ("none", "low", "moderate", "high"):
        xs, ys = [], []
        for n, (band, mg, w) in enumerate(points):
            if w != worst:
                continue
            # a fixed spread inside the band's column (the same on every run)
            xs.append(index[band] + ((n * 0.618034) % 1 - 0.5) * 0.6)
            ys.append(mg)
        if xs:
            ax.scatter(xs, ys, s=9, alpha=0.6, color=COLOURS[worst],
                       label="no finding" if worst == "none" else worst)
    ax.set_xticks(range(len(bands)), [BAND_LABELS.get(b, b) for b in bands])
    ax.set_xlabel("kidney function (renal band of the check)")
    ax.set_ylabel("oral baclofen, mg/day")
    ax.set_title("Patients on oral baclofen: renal band against daily dose")
    if points:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                  title="most severe finding")
    else:
        ax.text(0.5, 0.5, "no patient on oral baclofen", ha="center", va="center",
                transform=ax.transAxes)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def bands_chart(bands: dict[str, int]) -> str:
    fig = _figure(8, 2.8)
    ax = fig.add_subplot()
    names = list(bands)
    ax.bar([BAND_LABELS.get(b, b) for b in names], [bands[b] for b in names], color="#5d6d7e")
    ax.set_ylabel("patients on baclofen")
    ax.set_title("Patients on baclofen by renal band")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _anchor(patient: str) -> str:
    return "patient-" + re.sub(r"[^A-Za-z0-9_-]", "_", patient.split("/", 1)[-1])


def render(summary: dict[str, Any], top: list[dict[str, Any]],
           points: list[tuple[str, float, str]]) -> str:
    e = html.escape
    bands = [b for b, n in summary["renalBands"].items() if n or b != "dialysis"]
    findings = summary["findings"]
    sev = findings["bySeverity"]
    figures = [
        ("findings-by-rule", findings_chart(findings["byRule"])),
        ("band-dose", band_dose_chart(points, list(summary["renalBands"]))),
        ("renal-bands", bands_chart({b: summary["renalBands"][b] for b in bands})),
    ]
    rows = []
    details = []
    for entry in top:
        c = entry["counts"]
        anchor = _anchor(entry["patient"])
        mg = "-" if entry["oralDailyMg"] is None else f"{entry['oralDailyMg']:g}"
        renal = "-" if entry["renal"] is None else f"{entry['renal']:g} mL/min"
        rows.append(
            f"<tr><td><a href='#{anchor}'>{e(entry['patient'])}</a></td>"
            f"<td class=n>{c['high']}</td><td class=n>{c['moderate']}</td>"
            f"<td class=n>{c['low']}</td><td>{e(BAND_LABELS.get(entry['band'], entry['band']))}"
            f"</td><td>{e(renal)}</td><td class=n>{e(mg)}</td></tr>")
        items = "".join(
            f"<li><span class='sev {e(s)}'>{e(s)}</span> <code>{e(rule)}</code> {e(text)}</li>"
            for rule, s, text in entry["findings"])
        details.append(
            f"<section id='{anchor}'><h3>{e(entry['patient'])}</h3>"
            f"<p>DetectedIssue.ndjson from line {entry['firstLine']} "
            f"(<a href='DetectedIssue.ndjson'>DetectedIssue.ndjson</a>)</p><ul>{items}</ul>"
            "</section>")
    figure_html = "".join(f"<figure id='{fid}'>{svg}</figure>" for fid, svg in figures)
    facts = [
        ("Patients read", summary["patientsRead"]),
        ("Patients on baclofen", summary["patientsOnBaclofen"]),
        ("Orders checked", summary["ordersChecked"]),
        ("Patients with findings", summary["patientsWithFindings"]),
        ("Findings (high / moderate / low)",
         f"{findings['total']} ({sev.get('high', 0)} / {sev.get('moderate', 0)} / "
         f"{sev.get('low', 0)})"),
        ("Patients not checked", summary["patientsNotChecked"]),
        ("Lines not read", summary["problems"]["notRead"]),
        ("Check time", summary["checkTime"]),
        ("Knowledge", summary["knowledgeVersion"]),
        ("Time", f"{summary['seconds']['total']:g} s"),
    ]
    fact_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>baclofen-check population review</title>
<style>
body {{ font-family: sans-serif; margin: 2rem auto; max-width: 62rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: left; }}
td.n {{ text-align: right; }}
figure {{ margin: 1.5rem 0; }} figure svg {{ max-width: 100%; height: auto; }}
.sev {{ color: #fff; border-radius: 3px; padding: 0 .3rem; font-size: .85em; }}
.sev.high {{ background: {COLOURS['high']}; }}
.sev.moderate {{ background: {COLOURS['moderate']}; }}
.sev.low {{ background: {COLOURS['low']}; }}
</style></head><body>
<h1>Population review</h1>
<p>{e(str(summary['source']))}: every active baclofen order, reviewed as it stands at the check
time. Outputs beside this page: <a href="DetectedIssue.ndjson">DetectedIssue.ndjson</a>,
<a href="OperationOutcome.ndjson">OperationOutcome.ndjson</a> (what could not be read or
checked), <a href="summary.json">summary.json</a>.</p>
<table id="summary">{fact_rows}</table>
{figure_html}
<h2>Highest-severity patients</h2>
<table id="top-patients"><thead><tr><th>patient</th><th>high</th><th>moderate</th><th>low</th>
<th>renal band</th><th>renal value</th><th>oral mg/day</th></tr></thead>
<tbody>{''.join(rows) or '<tr><td colspan=7>no findings</td></tr>'}</tbody></table>
{''.join(details)}
</body></html>
"""


def write_report(path: Path, summary: dict[str, Any], top: list[dict[str, Any]],
                 points: list[tuple[str, float, str]]) -> None:
    path.write_text(render(summary, top, points), encoding="utf-8")
