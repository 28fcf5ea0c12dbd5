"""The command line: check files offline, list the rules (service/cli.py)."""

from __future__ import annotations

import gc
import io
import json
import os
import re
import shutil
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

import service.cli as cli
from service import create_app, gunicorn_conf
from service.checker import check_body
from service.cli import main
from service.knowledge import load
from service.output.cards import render_cards
from service.warmup import sample_body, warm_up
from tests.support.checks import found
from tests.support.fhir_validate import validate
from tests.support.fixtures import FIXTURES


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


FHIR_FIXTURES = sorted(p.name for pattern in ("params-*.json", "bundle-*.json")
                       for p in FIXTURES.glob(pattern))


@pytest.mark.parametrize("name", FHIR_FIXTURES)
def test_check_prints_a_valid_bundle_for_every_fixture(capsys, name):
    code, out, _err = run_cli(capsys, "check", str(FIXTURES / name))
    assert code == 0
    result = json.loads(out)
    assert result["resourceType"] == "Bundle"
    validate(result)


def test_check_finds_the_overdose(capsys):
    code, out, _err = run_cli(capsys, "check", str(FIXTURES / "params-overdose.json"))
    assert code == 0
    assert found(json.loads(out)) == [("oral.max-daily", "high"), ("oral.max-single", "moderate")]


def test_check_profile_option(capsys, tmp_path):
    body = json.loads((FIXTURES / "params-overdose.json").read_text(encoding="utf-8"))
    # 30 mg four times a day: uk max 100 mg/day (moderate up to 120), single max 25 mg
    path = tmp_path / "order.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    code, out, _err = run_cli(capsys, "check", "--profile", "uk", str(path))
    assert code == 0
    assert found(json.loads(out)) == [("oral.max-daily", "moderate"),
                                      ("oral.max-single", "moderate")]


def test_check_time_option_is_used_when_the_body_has_none(capsys, tmp_path):
    body = json.loads((FIXTURES / "bundle-review.json").read_text(encoding="utf-8"))
    path = tmp_path / "review.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    code, out, _err = run_cli(capsys, "check", "--check-time", "2026-11-25T12:00:00+01:00",
                              str(path))
    assert code == 0
    assert json.loads(out)["timestamp"] == "2026-11-25T12:00:00+01:00"


@pytest.mark.parametrize(("content", "words"), [
    pytest.param("{not json", "malformed JSON", id="malformed"),
    pytest.param('{"resourceType": "Parameters", "parameter": []}', "no MedicationRequest",
                 id="no-order"),
    pytest.param('{"resourceType": "Bundle", "type": "collection", "entry": []}',
                 "exactly one Patient", id="bundle-without-patient"),
])
def test_bad_file_prints_an_operation_outcome_and_exits_1(capsys, tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    code, out, err = run_cli(capsys, "check", str(path))
    assert code == 1
    outcome = json.loads(out)
    assert outcome["resourceType"] == "OperationOutcome"
    validate(outcome)
    assert words in outcome["issue"][0]["diagnostics"]
    assert "not checked" in err


def test_several_files_one_line_each_and_exit_1_if_any_fails(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[]", encoding="utf-8")
    code, out, _err = run_cli(capsys, "check", str(FIXTURES / "params-overdose.json"), str(bad))
    assert code == 1
    lines = out.strip().splitlines()
    assert [json.loads(line)["resourceType"] for line in lines] == ["Bundle", "OperationOutcome"]


def test_check_reads_standard_input(capsys, monkeypatch):
    text = (FIXTURES / "params-microgram.json").read_text(encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code, out, _err = run_cli(capsys, "check", "-")
    assert code == 0
    assert found(json.loads(out)) == [("units.oral-microgram", "high")]


def test_bad_check_time_option_exits_2(capsys):
    code, _out, err = run_cli(capsys, "check", "--check-time", "soon",
                              str(FIXTURES / "params-overdose.json"))
    assert code == 2
    assert "check-time" in err


def test_rules_lists_every_rule_in_the_knowledge_file(capsys):
    code, out, _err = run_cli(capsys, "rules")
    assert code == 0
    kb = load()
    assert kb.version in out
    listed = re.findall(r"^(\S+)$", out, flags=re.MULTILINE)
    assert listed == list(kb.rules)
    for rule_id in ("oral.max-daily", "oral.max-single", "oral.probable-error",
                    "oral.frequency", "oral.duplicate", "order.unverifiable-dose",
                    "order.prn-no-max", "units.oral-microgram", "units.liquid-volume"):
        assert rule_id in listed
    assert "DOSEH (High Dose Alert)" in out
    assert "profile uk" in out and "max_daily_mg=100" in out



@pytest.mark.parametrize("name", ["missing.json", "missing.ndjson"])
def test_a_missing_file_is_reported_not_a_traceback(capsys, tmp_path, name):
    assert main(["check", str(tmp_path / name)]) == 1
    captured = capsys.readouterr()
    assert "cannot be read" in captured.err + captured.out
    assert "Traceback" not in captured.err


def test_rules_table_shows_kidney_bands_and_drug_classes(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    assert "severe < 30, dialysis/ESRD < 15 mL/min" in out
    assert "oxycodone" in out and "-sartan" in out


# --- serve: the gunicorn command ----------------------------------------------------------

@pytest.mark.parametrize(("cores", "env", "workers", "threads"), [
    (2, {}, "4", "2"),
    (1, {}, "2", "2"),
    (12, {}, "16", "2"),
    (2, {"WORKERS": "3", "THREADS": "5"}, "3", "5"),
], ids=["two-per-core", "at-least-two", "at-most-16", "environment-wins"])
def test_serve_runs_gunicorn_with_two_workers_per_core(monkeypatch, tmp_path, cores, env,
                                                       workers, threads):
    class Exec(Exception):
        pass

    seen: list[list[str]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        seen.append(argv)
        raise Exec

    for key in ("WORKERS", "THREADS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # serve makes its own metrics directory and sets this; restored after the test
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda _pid: set(range(cores)))
    monkeypatch.setattr(cli.os, "execv", fake_execv)
    with pytest.raises(Exec):
        main(["serve", "--bind", "127.0.0.1:1"])
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    argv = seen[0]
    assert argv[argv.index("--workers") + 1] == workers
    assert argv[argv.index("--threads") + 1] == threads
    # gthread that gives a thread to a connection only once its request arrived
    assert argv[argv.index("--worker-class") + 1] == "service.serving.BufferingWorker"
    assert "--no-control-socket" in argv  # one control socket per user: off


def test_gunicorn_workers_warm_up_and_freeze_what_they_loaded_before_serving(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
                      "API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False})
    gc.unfreeze()
    try:
        gunicorn_conf.post_worker_init(SimpleNamespace(wsgi=app))
        assert gc.get_freeze_count() > 1000  # the modules and knowledge loaded by this process
    finally:
        gc.unfreeze()
    # the made-up check is not an audited check
    assert app.extensions["store"].counts()["checks"] == 0


def test_the_warm_up_check_reaches_the_renal_interaction_and_card_rules():
    now = datetime(2026, 11, 25, 10, tzinfo=UTC)
    bundle, req, outcome = check_body(sample_body(now), now, "us", load())
    validate(bundle)
    assert {f.rule_id for f in outcome.findings} >= {"renal.dose-band", "interaction.sedative"}
    assert render_cards(req, outcome, load()).cards
    assert warm_up(load(), "us", now) is True
    assert warm_up(load(), "no-such-profile", now) is False  # a failure is logged, never raised
