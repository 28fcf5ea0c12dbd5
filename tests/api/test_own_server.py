"""A CDS call whose fhirServer is this service's own base URL (possible when FHIR_ALLOWLIST
covers it) is never fetched from: each call would hold a worker thread waiting on another."""

from __future__ import annotations

from pathlib import Path

from service import create_app
from service.cds.fetching import is_this_service
from tests.support import builders as b
from tests.support.cdsclient import cards, hook_call, post, rules_in
from tests.support.httpstub import stub_server


def test_this_services_own_base_url_is_recognised() -> None:
    base = "https://cds.example/baclofen"
    assert is_this_service("https://CDS.example/baclofen/", base)
    assert is_this_service("https://cds.example/baclofen/fhir", base)
    assert not is_this_service("https://cds.example/baclofen-ehr", base)
    assert not is_this_service("https://ehr.example/fhir", base)


def test_a_fhir_server_at_our_own_base_url_is_not_called(tmp_path: Path) -> None:
    with stub_server() as stub:  # stands where this service would be
        stub.json("/Patient/pat-1", b.patient())
        app = create_app({"CDS_REQUIRE_JWT": False, "FHIR_ALLOWLIST": stub.base,
                          "PUBLIC_BASE_URL": stub.base, "TESTING": True,
                          "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3"})
        body = hook_call(b.order(b.dosage(20, frequency=3)), empty_prefetch=False)
        body["fhirServer"] = stub.base
        got = cards(post(app.test_client(), body))
        assert stub.hits == []
    assert "context.unavailable" in rules_in(got)  # said, not silently left out
