"""create_app's settings and clock (interfaces.md section 1): given a mapping, the app reads the
mapping alone (the environment is not read at all); without one, the environment; the clock it
is given is the "now" of every call (the native and CDS checks) and of its start-up purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from service import create_app
from service.clock import fixed_clock
from service.config import ConfigError, load_settings, settings_from
from service.store import checks, get_store
from tests.support import builders as b
from tests.support.cdsclient import cards, hook_call, post

MOMENT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def _open(tmp_path: Path, at: datetime = MOMENT) -> Flask:
    return create_app({"API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False, "TESTING": True,
                       "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3"},
                      clock=fixed_clock(at))


def test_a_mapping_is_all_the_app_reads(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.setenv("BACLOFEN_PROFILE", "uk")
    monkeypatch.setenv("API_REQUIRE_AUTH", "false")
    monkeypatch.setenv("CDS_REQUIRE_JWT", "false")
    monkeypatch.setenv("MAX_BATCH_LINES", "not a number")  # the start would fail on it
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3", "TESTING": True})
    s = app.config["SETTINGS"]
    assert (s.profile, s.api_require_auth, s.cds_require_jwt, s.max_batch_lines) == (
        "us", True, True, 10000)


def test_without_a_mapping_the_app_reads_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("BACLOFEN_PROFILE", "uk")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/a.sqlite3")
    monkeypatch.setenv("SPOOL_DIR", str(tmp_path / "spool"))
    assert create_app().config["SETTINGS"].profile == "uk"


def test_the_cli_reads_the_environment_then_its_overrides() -> None:
    s = load_settings({"BACLOFEN_PROFILE": "us"},
                      environ={"BACLOFEN_PROFILE": "uk", "MAX_BATCH_LINES": "7"})
    assert (s.profile, s.max_batch_lines) == ("us", 7)
    assert settings_from({"MAX_BATCH_LINES": 7, "FHIR_SERVER_URL": None}).max_batch_lines == 7
    with pytest.raises(ConfigError, match="NOT_A_SETTING"):
        settings_from({"NOT_A_SETTING": "1"})


def test_the_app_clock_is_the_time_of_native_and_cds_checks(tmp_path: Path) -> None:
    app = _open(tmp_path)
    client = app.test_client()
    order = b.order(b.dosage(40, frequency=3))
    resp = client.post("/MedicationRequest/$check", json=b.bundle(order, b.patient()),
                       headers={"Content-Type": "application/fhir+json"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["timestamp"] == "2025-03-04T05:06:07Z"
    assert cards(post(client, hook_call(order, patient=b.patient())))
    with get_store(app).engine.connect() as conn:
        times = {t.replace(tzinfo=UTC) if t.tzinfo is None else t
                 for t in conn.execute(select(checks.c.time)).scalars()}
    assert times == {MOMENT}


def test_the_start_purges_by_the_app_clock(tmp_path: Path) -> None:
    first = _open(tmp_path)
    assert cards(post(first.test_client(), hook_call(
        b.order(b.dosage(40, frequency=3)), patient=b.patient())))
    assert get_store(first).counts()["checks"] == 1
    kept = _open(tmp_path, MOMENT + timedelta(days=364))
    assert get_store(kept).counts()["checks"] == 1
    later = _open(tmp_path, MOMENT + timedelta(days=366))  # AUDIT_RETENTION_DAYS: 365
    assert get_store(later).counts()["checks"] == 0


def test_a_clock_without_a_timezone_fails_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3", "TESTING": True},
                   clock=lambda: datetime(2026, 1, 1))  # noqa: DTZ001 - the naive clock tested
