"""Readiness with the store, audit failures, and logs without tokens or clinical content."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from flask.testing import FlaskClient

from service import create_app, metrics
from service.logs import JsonFormatter
from service.store import get_store
from tests.support.builders import dosage, order, parameters
from tests.support.checks import AUTH, TOKEN, post_check
from tests.support.services import Postgres


def test_readyz_reports_knowledge_and_store(client: FlaskClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json()["store"] == "ok"


def test_readyz_is_503_when_the_postgresql_database_is_gone(postgres: Postgres) -> None:
    url = postgres.new_database()
    app = create_app({"API_REQUIRE_AUTH": False, "DATABASE_URL": url, "TESTING": True})
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    get_store(app).engine.dispose()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[arg-type]
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["reason"] == "store unreachable"


def test_a_check_is_answered_when_the_store_cannot_record_it(client: FlaskClient,
                                                             app: object) -> None:
    store = get_store(app)  # type: ignore[arg-type]
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE findings")
    spooled = metrics.AUDIT_FAILURES.labels("spooled")._value.get()
    lost = metrics.AUDIT_FAILURES.labels("lost")._value.get()
    resp = post_check(client, parameters(order(dosage(40))))
    assert resp.status_code == 200
    # the record waits in the spool (tests/api/test_spool.py replays it)
    assert metrics.AUDIT_FAILURES.labels("spooled")._value.get() == spooled + 1
    assert metrics.AUDIT_FAILURES.labels("lost")._value.get() == lost


def test_logs_hold_no_token_query_or_clinical_content(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    app = create_app({"API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN, "TESTING": True,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3"})
    client = app.test_client()
    body = parameters(order(dosage(40), note=[{"text": "SECRET-CLINICAL-NOTE"}]))
    client.post("/MedicationRequest/$check?profile=uk", json=body,
                headers={**AUTH, "Content-Type": "application/fhir+json",
                         "X-Request-ID": "req-123"})
    client.post("/MedicationRequest/$check", data="{bad", headers={
        **AUTH, "Content-Type": "application/fhir+json"})
    formatter = JsonFormatter()
    err = "\n".join(formatter.format(r) for r in caplog.records)
    assert '"request_id": "req-123"' in err
    for secret in (TOKEN, "SECRET-CLINICAL-NOTE", "profile=uk", "baclofen 10 MG"):
        assert secret not in err
