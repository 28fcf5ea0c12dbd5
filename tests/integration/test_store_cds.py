"""The store's CDS Hooks bookkeeping of issue 13, on SQLite and PostgreSQL: the clinician's
feedback comment (schema 2, added to an older database at start) and which findings
``baclofen-patient-view`` already returned for a patient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.store import SCHEMA_VERSION, CheckRecord, FindingRecord, Store

T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)
VIEW = "cds-services/baclofen-patient-view"


def _check(when: datetime, patient: str, endpoint: str = VIEW,
           found: tuple[tuple[str, str | None], ...] = (("f-1", "card-1"),)) -> CheckRecord:
    return CheckRecord(time=when, caller="anonymous", endpoint=endpoint, hook="patient-view",
                       hook_instance="h", patient_ref=patient, order_refs=["MedicationRequest/o"],
                       knowledge_version="k", latency_ms=1.0,
                       findings=[FindingRecord("oral.max-daily", "high", fid, card,
                                               {"resourceType": "DetectedIssue"})
                                 for fid, card in found])


def test_comment_column_is_added_to_a_version_1_database(db_url: str) -> None:
    store = Store(db_url).start(now=T0)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE feedback DROP COLUMN user_comment")
        conn.exec_driver_sql("UPDATE schema_version SET version = 1")
    store.close()
    store = Store(db_url).start(now=T0)
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version FROM schema_version").scalar() \
                == SCHEMA_VERSION
        store.record_check(_check(T0, "Patient/p"))
        assert store.record_feedback(VIEW, "card-1", "overridden", [], "will-monitor", T0,
                                     user_comment="x" * 3000)
        report = {r.rule_id: r for r in store.report()}["oral.max-daily"]
        assert report.comments == [("will-monitor", "x" * 2000)]
    finally:
        store.close()


def test_returned_findings_by_endpoint_patient_and_time(db_url: str) -> None:
    store = Store(db_url).start(now=T0)
    try:
        store.record_check(_check(T0 - timedelta(hours=2), "Patient/p"))
        store.record_check(_check(T0 - timedelta(hours=30), "Patient/p",
                                  found=(("f-old", "card-2"),)))
        store.record_check(_check(T0, "Patient/q", found=(("f-q", "card-3"),)))
        store.record_check(_check(T0, "Patient/p", endpoint="cds-services/baclofen-order-sign",
                                  found=(("f-sign", "card-4"),)))
        store.record_check(_check(T0, "Patient/p", found=(("f-nocard", None),)))
        since = T0 - timedelta(hours=24)
        ids = ["f-1", "f-old", "f-q", "f-sign", "f-nocard", "f-never"]
        assert store.returned_findings(VIEW, "Patient/p", ids, since) == {"f-1"}
        assert store.returned_findings(VIEW, "Patient/q", ids, since) == {"f-q"}
        assert store.returned_findings(VIEW, "Patient/p", ids, T0 - timedelta(hours=48)) == {
            "f-1", "f-old"}
        assert store.returned_findings(VIEW, "Patient/p", [], since) == set()
        # the checks of the call being answered do not count
        assert store.returned_findings(VIEW, "Patient/p", ids, since, "h") == set()
        assert store.returned_findings(VIEW, "Patient/p", ids, since, "other") == {"f-1"}
    finally:
        store.close()
